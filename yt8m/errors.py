"""The project's error types. The command line prints their message and exits 2."""


class YT8MError(Exception):
    """Base of every error this project raises on purpose; the message is for the user.

    `exit_status`: what the command line exits with (2; a subclass may say otherwise).
    """

    exit_status = 2
