"""The base of every error a user can fix: `main.py` prints its message without a traceback."""


class UserError(ValueError):
  """Bad input (a file, a folder, a flag); the message names it and says what to do."""
