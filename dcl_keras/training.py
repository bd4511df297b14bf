"""Training: fit the model of `dcl_keras.models.recipe` (its compile recipe), checkpoint and resume.

`train_and_evaluate(config, workdir)` runs the stages of `bin/train`: setup,
data, model, training, evaluation, export. Rerunning it on the same workdir
resumes from the last checkpoint (after every epoch, and every
`train.checkpoint_every_steps` steps) at that exact step: weights, optimizer
state, the data stream and the RCM draws are those of an uninterrupted run. A
finished run is not trained again. See `dcl_keras.checkpointing`.
"""

import contextlib
import hashlib
import json
import logging
import os

import keras

from dcl_keras import checkpointing, preemption, saving
from dcl_keras import workdir as run_folder
from dcl_keras.config import ConfigError, validate_config
from dcl_keras.data import datasets, pipeline, readers, specs, train_stream
from dcl_keras.errors import UserError
from dcl_keras.models import dcl
from dcl_keras.models.recipe import build_model, compile_model
from dcl_keras.models.region_confusion import RegionConfusion

EXPORT_FOLDER = "The export folder (export.dir)"
STREAM_FIELDS = (
    "seed",
    "input.batch_size",
    "rcm.placement",
    "rcm.originals",
    "rcm.destructed",
    "train.steps_per_epoch",
    "train.epoch_batch_size",
)


class AlignmentHeadMonitor(keras.callbacks.Callback):
    """Warns when the region alignment head has died.

    The head ends in a ReLU: if a large step pushes every output below zero,
    the outputs stay at 0 and no gradient flows back. Its error then sits at
    exactly 0.5, the mean of the normalised targets.
    """

    def on_epoch_end(self, epoch, logs=None):
        error = (logs or {}).get("region_alignment_error")
        if error is not None and abs(error - 0.5) < 1e-4:
            logging.warning(
                "Epoch %d: region_alignment_error is %.5f, the error of an all-zero output: the alignment "
                "head's ReLU is probably dead. Lower train.learning_rate or train.head_multiplier, or set "
                "loss.alignment_reduction='mean'.",
                epoch + 1,
                error,
            )


class LearningRateLogger(keras.callbacks.Callback):
    """Logs each epoch's backbone learning rate as of its last step (metrics.csv, report.html)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def steps_per_epoch(config, split, cluster=None):
    """Steps of one Keras epoch: `train.steps_per_epoch`, else one pass at `train.epoch_batch_size` examples a step.

    The latter defaults to `input.batch_size`; an equal-compute baseline sets
    it to DCL's batch size so both take the same steps per epoch.
    """
    if config.train.steps_per_epoch:
        return config.train.steps_per_epoch
    try:
        return train_stream.steps_per_epoch(
            split, config.train.epoch_batch_size or config.input.batch_size, cluster.num_processes if cluster else 1
        )
    except UserError as e:
        field = "train.epoch_batch_size" if config.train.epoch_batch_size else "input.batch_size"
        raise ConfigError(f"Config field `{field}`: {e}") from None


def split_class_counts(split):
    """Training examples per class of a split (labels read without decoding any image; a manifest's counts)."""
    import numpy as np

    if getattr(split, "class_counts", None) is not None:
        return list(split.class_counts)
    return np.bincount(np.asarray(split.labels, np.int64), minlength=split.num_classes).tolist()


def train_batches(config, split, start_step=0, cluster=None):
    """The training stream of a config; with several processes, this process's share of it."""
    return train_stream.train_batches(
        split,
        specs.TrainSpec.from_config(config),
        start_step=start_step,
        process_index=cluster.process_id if cluster else 0,
        process_count=cluster.num_processes if cluster else 1,
    )


def _build_trainer(config, split, steps):
    """A new trainer: the DCLModel, or a DeviceRCMTrainer around it for rcm.placement=device; compiled."""
    on_device = config.rcm.placement == "device"
    counts = split_class_counts(split) if config.loss.class_balance_beta else None
    trainer = build_model(config, split.num_classes, split.class_names, steps, compile=False)
    if on_device:
        region_confusion = RegionConfusion(
            n=config.rcm.n,
            k=config.rcm.k,
            originals=config.rcm.originals,
            destructed=config.rcm.destructed,
            seed=config.seed,
        )
        trainer = dcl.DeviceRCMTrainer(trainer, region_confusion)
    compile_model(trainer, config, steps, counts)
    return trainer


def _resume(checkpoint, config, steps, split):
    """The trainer of a checkpoint (its path, or the model loaded from it), recompiled from `config`.

    It keeps the checkpoint's optimizer state (step counter and slots).
    """
    trainer = saving.load_model(checkpoint) if isinstance(checkpoint, str) else checkpoint
    old_optimizer = trainer.optimizer
    compile_model(trainer, config, steps, split_class_counts(split) if config.loss.class_balance_beta else None)
    checkpointing.adopt_optimizer_state(trainer, old_optimizer)
    return trainer


def _empty_stream_error(split):
    """The DatasetError that names the unreadable files behind an all-failed epoch."""
    bad = pipeline.find_undecodable(list(getattr(split, "paths", [])))
    names = [split.paths[i] for i in bad] or [f"every record of {split.name}"]
    return readers.DatasetError(
        f"{split.name}: training stopped, no example of an epoch could be decoded",
        [f"{name}: cannot be read or decoded now" for name in names],
    )


def stream_fingerprint(config, split, cluster=None):
    """What fixes how a step maps to data: a resumed run must match the checkpoint's.

    Streams of encoded records (TFDS, records) also depend on the shuffle
    buffer; record splits on their shard files, and, as each process reads
    its own run of the records, on the process count.
    """
    values = {}
    for field in STREAM_FIELDS:
        value = config
        for part in field.split("."):
            value = value[part]
        values[field] = value
    values["training examples"] = split.num_examples
    if config.data.exclude or config.data.relabel or config.data.audit_folds:  # Lists whose contents can change.
        curated = json.dumps([list(split.keys()), [int(label) for label in split.labels]])
        values["curated training split (digest of keys and labels)"] = hashlib.sha256(curated.encode()).hexdigest()[:16]
    if hasattr(split, "encoded_dataset"):
        values["data.tfds_shuffle_buffer"] = config.data.tfds_shuffle_buffer
    if pipeline.is_file_sharded(split):
        values["processes reading their own shards"] = cluster.num_processes if cluster else 1
        shards = json.dumps([split.seed] + [(os.path.basename(path), n) for path, n in split.shards])
        values["record shards (digest of seed, names and counts)"] = hashlib.sha256(shards.encode()).hexdigest()[:16]
    return values


def _check_same_stream(workdir, fingerprint):
    saved = checkpointing.saved_state(workdir).get("stream")
    changed = [f"{k} {saved[k]!r} -> {v!r}" for k, v in fingerprint.items() if saved and k in saved and saved[k] != v]
    if changed:
        raise ConfigError(
            "The checkpoint in the workdir was trained on another data stream; resuming would not continue it. "
            f"Changed since: {', '.join(changed)}. Resume with the original values, or use a new --workdir. "
            f"Received: {run_folder.CHECKPOINT} in {workdir}"
        )


def train(config, workdir, train_split, val_split=None, process_dir=None, export_dir=None, cluster=None, stop=None):
    """Trains (or resumes) the DCL model in `workdir`; returns the trained model.

    `val_split` is evaluated every `train.validation_freq` epochs; the test
    split never enters training.

    With several processes, saving is collective (every process takes part),
    so every process checkpoints: the chief into `workdir`, the others into
    their `process_dir`; only the chief writes logs. All resume from the
    chief's checkpoint. Each process builds only its share of the input
    (`cluster`, a distribute.Cluster).

    `stop` (a preemption.StopSignals) ends training after the step in
    which a process caught SIGTERM or SIGUSR1, with a checkpoint of that step
    in every process, by raising preemption.Preempted.
    """
    steps = steps_per_epoch(config, train_split, cluster)
    fingerprint = stream_fingerprint(config, train_split, cluster)
    preemption.remove_partial_files(process_dir or workdir)
    if checkpointing.checkpoint_files(workdir):
        _check_same_stream(workdir, fingerprint)
    loaded, path = preemption.load_newest(workdir, saving.load_model, move_aside=process_dir is None, steps=steps)
    if loaded is None:
        trainer = _build_trainer(config, train_split, steps)
    else:
        trainer = _resume(loaded, config, steps, train_split)
        logging.info("Resuming from %s at step %d.", path, checkpointing.completed_steps(trainer))
    model = trainer.dcl_model if isinstance(trainer, dcl.DeviceRCMTrainer) else trainer
    step = checkpointing.completed_steps(trainer)
    epoch, done_in_epoch = divmod(step, steps)
    margins = _margin_recorder(config, model, train_split, workdir, -1 if done_in_epoch else epoch - 1)
    if epoch >= config.train.epochs:
        logging.info("Training already finished (%d epochs).", epoch)
        return model
    if process_dir is None:
        need = checkpointing.checkpoint_bytes(trainer, config.train.keep_checkpoints, workdir)
        checkpointing.check_writable(workdir, "The workdir", need)
        if export_dir:
            checkpointing.check_writable(export_dir, EXPORT_FOLDER, checkpointing.export_bytes(model))
    validation = _validation(config, val_split, cluster)
    if cluster and cluster.num_processes > 1:
        logging.info(
            "Process %d of %d builds %d of the %d examples of every global batch (%s).",
            cluster.process_id,
            cluster.num_processes,
            config.input.batch_size // cluster.num_processes,
            config.input.batch_size,
            "its own run of the records" if pipeline.is_file_sharded(train_split) else "its slice of each batch",
        )
    callbacks = margins + _callbacks(config, workdir, process_dir, fingerprint, steps, stop, cluster)
    fit = dict(callbacks=callbacks, shuffle=False, verbose=config.train.verbose, **validation)
    try:
        if done_in_epoch:  # Killed between two step checkpoints: finish that epoch first.
            logging.info("Finishing epoch %d from its step %d.", epoch + 1, done_in_epoch)
            trainer.fit(
                train_batches(config, train_split, step, cluster),
                epochs=epoch + 1,
                initial_epoch=epoch,
                steps_per_epoch=steps - done_in_epoch,
                **fit,
            )
            epoch += 1
        if epoch < config.train.epochs:
            trainer.fit(
                train_batches(config, train_split, epoch * steps, cluster),
                epochs=config.train.epochs,
                initial_epoch=epoch,
                steps_per_epoch=steps,
                **fit,
            )
    except tf_errors().InvalidArgumentError:
        # An epoch is a full pass over the split, so the stream's "no example could be decoded" check fired
        # exactly when no file decodes now; anything else (some file still decodes) is another error.
        if pipeline.any_decodable(train_split):
            raise
        raise _empty_stream_error(train_split) from None
    return model


def _validation(config, val_split, cluster):
    """fit's validation arguments: every `train.validation_freq` epochs on the validation split, or none."""
    if not config.train.validation_freq:
        return {}
    if val_split is None:
        raise ConfigError(
            "Config field `train.validation_freq`: needs a validation split; set data.val_fraction "
            "(or use a source with its own). Received: "
            f"train.validation_freq={config.train.validation_freq}, data.val_fraction={config.data.val_fraction}"
        )
    return dict(
        validation_data=pipeline.eval_batches(
            val_split,
            specs.EvalSpec.from_config(config),
            batch_size=config.eval.batch_size,
            n=None if config.rcm.placement == "device" else config.rcm.n,
            bad_files=config.data.bad_files,
            process_index=cluster.process_id if cluster else 0,
            process_count=cluster.num_processes if cluster else 1,
        ),
        validation_freq=config.train.validation_freq,
    )


def _margin_recorder(config, model, train_split, workdir, finished_epoch):
    """[label_audit.MarginRecorder] with train.record_margins (bin/audit --method=aum), else [].

    It comes before the checkpointer, so an epoch's margins are written before
    its checkpoint; `finished_epoch`, the last epoch the resumed model has
    finished, is recorded now if a stop lost it.
    """
    if not config.train.record_margins:
        return []
    from dcl_keras import label_audit

    spec = specs.EvalSpec.from_config(config)
    recorder = label_audit.MarginRecorder(model, train_split, spec, workdir, config.eval.batch_size)
    recorder.record_if_missing(finished_epoch)
    return [recorder]


def _callbacks(config, workdir, process_dir, fingerprint, steps, stop, cluster):
    """The divergence guard, head monitor, learning-rate log and checkpointer; the chief also logs metrics."""
    callbacks = [
        checkpointing.DivergenceGuard(workdir),
        AlignmentHeadMonitor(),
        LearningRateLogger(),
        checkpointing.Checkpointer(
            process_dir or workdir,
            config.train.checkpoint_every_steps,
            stream=fingerprint,
            keep=config.train.keep_checkpoints,
            steps_per_epoch=steps,
            stop=stop,
            num_processes=cluster.num_processes if cluster else 1,
        ),
    ]
    if process_dir is None:
        callbacks += [
            keras.callbacks.CSVLogger(os.path.join(workdir, run_folder.METRICS), append=True),
            keras.callbacks.TensorBoard(os.path.join(workdir, run_folder.TENSORBOARD)),
        ]
    return callbacks


def tf_errors():
    """tf.errors, whose InvalidArgumentError the tf.data stream raises under any Keras backend."""
    import tensorflow as tf

    return tf.errors


def train_and_evaluate(config, workdir, cluster=None):
    """The stages of bin/train. Returns a dict with the paths and figures produced.

    With several processes (`cluster`, JAX data parallel), every process trains;
    the chief alone writes the workdir, evaluates and exports, and the others
    save their final model under `<workdir>/process_<id>/`.
    """
    from dcl_keras import distribute

    # Setup.
    validate_config(config)
    cluster = cluster or distribute.Cluster()
    if cluster.num_processes > 1 and (config.train.record_margins or config.data.audit_folds):
        raise ConfigError(
            "bin/audit's runs (train.record_margins, data.audit_folds) predict the training images in one "
            f"process: run them with one process. Received: {cluster.num_processes} processes"
        )
    workdir = os.path.abspath(os.path.expanduser(workdir))
    export_dir = run_folder.export_dir(workdir, config.export.dir)
    lock = contextlib.nullcontext()
    if cluster.is_chief:  # Before the processes connect, so a refusal never leaves the others waiting.
        checkpointing.check_writable(os.path.join(workdir, run_folder.CHECKPOINTS), "The workdir")
        if config.export.enabled:
            checkpointing.check_writable(export_dir, EXPORT_FOLDER)
        lock = checkpointing.WorkdirLock(workdir)
    with lock:
        scope = distribute.setup(config.train.distribution, cluster, config.train.tpu)
        if cluster.is_chief:
            run_folder.write_json(os.path.join(workdir, run_folder.CONFIG), config.to_dict())
        with preemption.StopSignals() as stop:
            return _train_stages(config, workdir, cluster, scope, export_dir, stop)


def _train_stages(config, workdir, cluster, scope, export_dir, stop):
    from dcl_keras import evaluation, export, label_audit

    keras.utils.set_random_seed(config.seed)
    # Data.
    splits = datasets.load_splits(config.data)
    train_split = splits.train
    # Model and training.
    process_dir = None if cluster.is_chief else run_folder.process_dir(workdir, cluster.process_id)
    if process_dir:
        os.makedirs(os.path.join(process_dir, run_folder.CHECKPOINTS), exist_ok=True)
    with scope:
        model = train(
            config,
            workdir,
            train_split,
            splits.val,
            process_dir,
            export_dir if config.export.enabled else None,
            cluster,
            stop,
        )
    evaluate = evaluation.evaluator(config, train_split.class_names)
    evaluate_here = config.eval.enabled and cluster.num_processes == 1
    before_precise_bn = {}
    if config.eval.precise_bn_batches:
        if evaluate_here:
            before_precise_bn = evaluation.headline(evaluate(dcl.classifier_model(model), splits.test))
        layers = evaluation.precise_bn_for_config(dcl.classifier_model(model), train_split, config)
        logging.info("Precise BN: re-estimated %d BatchNormalization layers.", layers)
        before_precise_bn["batchnorm_layers"] = layers
    final = os.path.join(process_dir or workdir, run_folder.FINAL_MODEL)
    checkpointing.write_after_training("the final model", final, model.save, workdir)
    if process_dir:
        return {"model": final}
    result = {"model": final}
    if config.export.backbone_weights:
        result["backbone_weights"] = os.path.join(workdir, run_folder.BACKBONE_WEIGHTS)
        checkpointing.write_after_training(
            "the backbone weights", result["backbone_weights"], model.backbone.save_weights, workdir
        )
    stop.after_training(final)  # Not later: a rerun would export a second version.
    # Export, then evaluation: evaluation.json is the run's last file (bin/sweep counts a run finished by it).
    if config.export.enabled:
        try:
            result["export"] = export.export_model_file(final, export_dir, top_k=config.export.top_k, model=model)
        except checkpointing.StorageError as e:
            raise checkpointing.with_context(
                e,
                f"Training is finished: {final} and the checkpoint {checkpointing.intact_checkpoint(workdir)} are "
                "intact, and rerunning the same command exports without training.",
            ) from None
    if config.eval.enabled and not evaluate_here:
        logging.warning(
            "Multi-process run: evaluation inside the job would need every process; run "
            "`bin/evaluate --workdir=%s` once training has finished.",
            workdir,
        )
    if config.data.audit_folds:  # bin/audit's fold run: the held-out fold's probabilities, before evaluation.json.
        label_audit.write_fold_predictions(dcl.classifier_model(model), config, workdir)
    if config.eval.enabled and evaluate_here:
        extra = {"before_precise_bn": before_precise_bn} if config.eval.precise_bn_batches else None
        result["evaluation"] = evaluate(dcl.classifier_model(model), splits.test, out_dir=workdir, extra=extra)
    return result
