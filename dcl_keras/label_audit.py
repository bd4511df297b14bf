"""Which training labels are likely wrong: out-of-fold probabilities ranked by cleanlab, or margins over training.

Two signals, written by the runs that `bin/audit` plans (dcl_keras/audit.py):

* K-fold (`data.audit_folds` = K, `data.audit_fold` = k): the run trains on
  every fold but k and, before its evaluation, writes the probabilities of
  fold k's images (`fold_predictions.npz`): images the model did not train
  on. Put together over the K runs they are out-of-fold probabilities, which
  cleanlab's `find_label_issues` (confident learning: per-class thresholds
  on the probability of the given label) turns into a ranked list. K runs.
* Margins (`train.record_margins`): one run records, at the end of every
  epoch, each training image's margin: the logit of its given label minus
  the largest other logit, through the evaluation preprocessing.
  Their mean over epochs is the area under the margin (AUM, Pleiss et al.
  2020, here measured at epoch ends rather than on the augmented training
  step): an image whose label the model never comes to prefer has a negative
  AUM; flagged where a two-component mixture fitted to the AUMs puts it in
  the lower component. One run and a forward pass over the training set per
  epoch.

Both return ranked rows: the example's key (`split.keys()`, what
`data.exclude` and `data.relabel` read), its given label, the label the
model suggests and a score (lower is more suspect).
"""

import os

import keras
import numpy as np

from dcl_keras import evaluation
from dcl_keras import workdir as run_folder
from dcl_keras.data import datasets, specs
from dcl_keras.errors import UserError


def split_probabilities(classifier, split, spec, batch_size=64):
    """Softmax probabilities [E, C] of every example of `split`, in its order (evaluation preprocessing)."""
    logits, _ = evaluation.predict_logits(classifier, split, spec, batch_size=batch_size, bad_files="skip")
    if len(logits) != split.num_examples:
        raise UserError(
            f"{split.name}: {split.num_examples - len(logits)} image(s) could not be decoded, so the audit cannot "
            "tell which prediction belongs to which image. Set data.check_files=True (it leaves such files out "
            "before training) and rerun."
        )
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))


def margins(logits, labels):
    """Logit of the given label minus the largest other logit, per example."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    given = logits[np.arange(len(labels)), labels]
    others = logits.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return given - others.max(axis=-1)


def write_fold_predictions(classifier, config, folder):
    """Writes the held-out fold's keys, given labels and probabilities to `<folder>/fold_predictions.npz`."""
    fold = datasets.load_heldout_fold(config.data)
    probabilities = split_probabilities(classifier, fold, specs.EvalSpec.from_config(config), config.eval.batch_size)
    path = os.path.join(folder, run_folder.FOLD_PREDICTIONS)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(
                f,
                keys=np.asarray(fold.keys(), dtype=str),
                labels=np.asarray(fold.labels, np.int64),
                probabilities=probabilities.astype(np.float32),
                fold=np.int64(config.data.audit_fold),
                folds=np.int64(config.data.audit_folds),
            )

    return run_folder.write_file(path, write)


class MarginRecorder(keras.callbacks.Callback):
    """Writes every training image's margin at the end of each epoch to `<workdir>/margins.npz`.

    `model` is the DCL model being trained (the trainer may wrap it).

    The file holds one row per epoch recorded so far (`epochs`, `margins`
    [E, N]), with the split's keys and given labels; a resumed run rewrites
    the rows of the epochs it trains again, so the file always describes the
    epochs that the model has finished.
    """

    def __init__(self, model, split, spec, folder, batch_size=64):
        super().__init__()
        self.dcl_model, self.split, self.spec, self.batch_size = model, split, spec, batch_size
        self.classifier = None
        self.path = os.path.join(folder, run_folder.MARGINS)
        self.keys = np.asarray(split.keys(), dtype=str)
        self.labels = np.asarray(split.labels, np.int64)

    def record_if_missing(self, epoch):
        """Records `epoch` now unless it is in the file: a run resumed from the checkpoint at that epoch's end.

        A run stopped on an epoch's last step (or killed between the
        checkpoint and this file) resumes at the next epoch with the model of
        the end of this one, so its margins can still be taken.
        """
        epochs = read_margins(self.path, self.keys)[0] if os.path.isfile(self.path) else []
        if epoch >= 0 and epoch not in epochs:
            self.on_epoch_end(epoch)

    def on_epoch_end(self, epoch, logs=None):
        from dcl_keras.models import dcl

        if self.classifier is None:  # Built once: its predict function is traced once, not every epoch.
            self.classifier = dcl.classifier_model(self.dcl_model)
        classifier = self.classifier
        logits, _ = evaluation.predict_logits(classifier, self.split, self.spec, batch_size=self.batch_size)
        if len(logits) != len(self.labels):
            raise UserError(
                f"{self.split.name}: some images could not be decoded, so margins cannot be matched to images. "
                "Set data.check_files=True and rerun."
            )
        epochs, rows = read_margins(self.path, self.keys) if os.path.isfile(self.path) else ([], [])
        kept = [(e, r) for e, r in zip(epochs, rows, strict=True) if e < epoch]
        kept.append((epoch, margins(logits, self.labels).astype(np.float32)))
        suggested = logits.argmax(axis=-1).astype(np.int64)  # The class this epoch's model prefers.

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    keys=self.keys,
                    labels=self.labels,
                    epochs=np.asarray([e for e, _ in kept], np.int64),
                    margins=np.stack([r for _, r in kept]),
                    suggested=suggested,
                )

        run_folder.write_file(self.path, write)


def read_margins(path, keys=None):
    """(epochs, margins [E, N]) of a margins.npz; with `keys`, checks that it describes the same images."""
    with np.load(path) as data:
        if keys is not None and not np.array_equal(data["keys"], keys):
            raise UserError(f"{path}: recorded for other training images than this run's. Remove it and rerun.")
        return data["epochs"].tolist(), list(data["margins"])


def load_margins(path):
    """{keys, labels, epochs, margins [E, N], suggested} of a run's margins.npz."""
    if not os.path.isfile(path):
        raise run_folder.MissingFile(
            f"{path}: no margins recorded. Train the run with train.record_margins=True (bin/audit --method=aum)."
        )
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def rank_out_of_fold(keys, labels, probabilities, class_names):
    """Ranked suspects of cleanlab's confident learning on out-of-fold `probabilities` [N, C].

    Returns (rows, flagged count): every example, most suspect first, those
    cleanlab flags first of all (ranked by self-confidence, the probability
    of the given label); each row a dict (key, label, suggested, score,
    flagged).
    """
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels, np.int64)
    probabilities = np.asarray(probabilities, np.float64)
    flagged = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence")
    score = probabilities[np.arange(len(labels)), labels]
    rest = np.setdiff1d(np.arange(len(labels)), flagged)
    order = np.concatenate([flagged, rest[np.argsort(score[rest], kind="stable")]]).astype(np.int64)
    suggested = probabilities.argmax(axis=-1)
    return _rows(keys, labels, suggested, score, order, set(flagged.tolist()), class_names), len(flagged)


def rank_margins(keys, labels, margin_rows, suggested, class_names):
    """Ranked suspects by area under the margin (AUM), flagged by a two-component mixture on it.

    `margin_rows` [E, N]; `suggested` [N], the class the last epoch's model
    prefers. A Gaussian mixture of two components is fitted to the AUMs (as
    DivideMix splits per-example losses); an example is flagged when the
    lower component is the likelier one for it, and only when that
    component's mean is below 0 (its examples' given labels lose to another
    class on average). Returns (rows, flagged count) as `rank_out_of_fold`.
    """
    aum = np.asarray(margin_rows, np.float64).mean(axis=0)
    order = np.argsort(aum, kind="stable")
    flagged = set(mixture_flags(aum).tolist())
    return _rows(keys, labels, suggested, aum, order, flagged, class_names), len(flagged)


def mixture_flags(scores, seed=0, separation=2.0):
    """Indices whose score the lower of two fitted Gaussian components explains better.

    None are flagged unless the two components are distinct groups: the lower
    one's mean below 0, and Ashman's D = sqrt(2) |m1 - m2| / sqrt(s1^2 + s2^2)
    above `separation` (2: a clean split of two groups). Hard but rightly
    labelled images form a tail, not a group, and are then left alone.
    """
    from sklearn.mixture import GaussianMixture

    scores = np.asarray(scores, np.float64).reshape(-1, 1)
    if len(scores) < 4 or np.ptp(scores) == 0:
        return np.zeros(0, np.int64)
    mixture = GaussianMixture(2, random_state=seed).fit(scores)
    means, stds = mixture.means_.ravel(), np.sqrt(mixture.covariances_.ravel())
    low = int(np.argmin(means))
    distinct = np.sqrt(2.0) * abs(means[0] - means[1]) / np.sqrt(np.sum(stds**2)) > separation
    if means[low] >= 0 or not distinct:
        return np.zeros(0, np.int64)
    return np.flatnonzero(mixture.predict_proba(scores)[:, low] > 0.5)


def _rows(keys, labels, suggested, score, order, flagged, class_names):
    return [
        {
            "rank": rank,
            "key": str(keys[i]),
            "label": class_names[int(labels[i])],
            "suggested": class_names[int(suggested[i])],
            "score": float(score[i]),
            "flagged": int(i) in flagged,
        }
        for rank, i in enumerate(order, 1)
    ]


def precision_recall(flagged_keys, true_keys):
    """(precision, recall) of a set of flagged keys against the truly wrong ones (None where undefined)."""
    flagged_keys, true_keys = set(flagged_keys), set(true_keys)
    hits = len(flagged_keys & true_keys)
    precision = hits / len(flagged_keys) if flagged_keys else None
    recall = hits / len(true_keys) if true_keys else None
    return precision, recall
