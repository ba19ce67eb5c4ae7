"""One exception type for every user-facing failure: the CLI prints its message as one line."""


class GramTFError(Exception):
    """A problem the user can fix (bad input, bad config, unsupported model).

    The message must name the file, key or value at fault and say what to do about it.
    """


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """An exception's message on one line (whitespace collapsed), cut to `limit` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if limit and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def did_you_mean(name, choices, n: int = 1) -> str:
    """' (did you mean a, b?)' for the closest of `choices` to `name`, or '' when none is close."""
    import difflib

    hint = difflib.get_close_matches(str(name), list(choices), n=n)
    return f" (did you mean {', '.join(hint)}?)" if hint else ""
