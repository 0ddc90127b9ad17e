"""The pure decision core: types, policies, guards, forecast, capacity, budget, knobs, baselines.

No I/O and no clock reads: every function takes time as a parameter. The import contracts in
pyproject (``[tool.importlinter]``) forbid this package any I/O library and the shell.
"""
