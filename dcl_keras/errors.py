"""The one base class of errors a user can fix, reported by the bin/ tools in one line; the status of a stopped run."""

# The exit status of a run stopped by a signal after saving its checkpoint: sysexits.h's EX_TEMPFAIL ("temporary
# failure; the user is invited to retry"), distinct from 143 (killed by SIGTERM before anything was saved). A
# scheduler requeues on it (bin/sweep's SLURM script does).
PREEMPTED_EXIT_STATUS = 75


class UserError(ValueError):
    """An error in what the user gave: config, dataset, files, weights, workdir.

    The bin/ tools print these as one line naming the input and what was
    expected (exit status 2); every other exception, a bug in this code, in
    Keras or in TensorFlow, keeps its traceback.
    """
