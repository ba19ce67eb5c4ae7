"""One exception type for every user-facing failure: the CLI prints its message as one line."""


class GramTFError(Exception):
    """A problem the user can fix (bad input, bad config, unsupported model).

    The message must name the file, key or value at fault and say what to do about it.
    """
