"""The one exception type for bad input.

Everything a user can get wrong (a config value, a data file, a prompt, a checkpoint) raises
`InputError` with a one-line message that names the problem and says what to do. The `minigpt`
command turns it into that line on stderr and exit status 2; anything else is a bug in minigpt
and exits with status 1 and a traceback.

`InputError` subclasses `ValueError`, so Python callers can catch it the usual way.
"""


class InputError(ValueError):
    """Bad input from the user: the message is one line and says what to do."""
