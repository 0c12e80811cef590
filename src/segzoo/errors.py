"""The one exception type the CLI turns into a clear message and a non-zero exit."""


class SegzooError(Exception):
    """A problem the user can fix: bad input, a refused overwrite, a missing file.

    ``problems`` holds one line per problem, each naming the file (or config key) and what is wrong.
    """

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))
