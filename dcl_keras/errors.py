"""The one base class of errors a user can fix, reported by the bin/ tools in one line."""


class UserError(ValueError):
    """An error in what the user gave: config, dataset, files, weights, workdir.

    The bin/ tools print these as one line naming the input and what was
    expected (exit status 2); every other exception, a bug in this code, in
    Keras or in TensorFlow, keeps its traceback.
    """
