"""The user-facing error type.

Library code raises ``NSTError`` (or a subclass) with a one-line message for anything a user
can fix: a bad file, a bad option, missing weights. The CLI prints ``error: <message>`` and
exits with ``exit_code`` (2); any other exception is an internal error (exit 1).
"""


class NSTError(Exception):
    """An error the user can act on. The message is one line and says what to do."""

    exit_code = 2


class WeightsError(NSTError):
    """Weights missing, unreadable, of the wrong shape or failing their checksum."""


class ImageError(NSTError):
    """An input image that cannot be used, or an output path that cannot be written."""


class ConfigError(NSTError, ValueError):
    """An invalid configuration value (also a ValueError, as the API promises)."""


class NSTWarning(UserWarning):
    """A non-fatal note for the user (first frame of an animation taken, weights not pretrained).

    Library code issues these with ``warnings.warn(msg, NSTWarning)``; the CLI prints them as
    ``warning: <message>``.
    """
