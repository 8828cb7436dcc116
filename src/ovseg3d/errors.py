"""The one exception type for user mistakes: the CLI and the node print its message as one line."""


class UserError(Exception):
    """Bad input (a missing file, an unknown name, a malformed value) that the user can fix."""
