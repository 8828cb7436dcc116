"""One module per `ovseg3d` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``."""
