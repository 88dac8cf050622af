"""Error kinds shared by every builder step.

The exit code tells the operator whether retrying can help: a user error (bad input, exit 2)
will fail the same way again; an infrastructure error (exit 3) may pass on a retry.
"""

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INFRA_ERROR = 3


class StepError(Exception):
    """Base for errors a step reports in its result instead of a traceback."""

    kind = "internal"
    exit_code = 1


class UserError(StepError):
    """The input is wrong: a person has to change something before a retry can succeed."""

    kind = "user"
    exit_code = EXIT_USER_ERROR


class InfraError(StepError):
    """Something outside the input failed (network, storage, server): a retry may succeed."""

    kind = "infrastructure"
    exit_code = EXIT_INFRA_ERROR
