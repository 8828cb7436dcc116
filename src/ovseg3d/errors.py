"""The exception types for bad input: the CLI prints them as one line, the node as a throttled warning."""


class UserError(Exception):
    """Bad input (a missing file, an unknown name, a malformed value) that the user can fix."""


class Rejected(UserError):
    """An input the node drops, with the kind its (throttled) warning is counted under."""

    def __init__(self, kind: str, text: str):
        super().__init__(text)
        self.kind = kind


class Skipped(Exception):
    """An input the node passes over on purpose (e.g. an RGB-D frame that is not a keyframe):
    counted as skipped under its reason, never warned about."""
