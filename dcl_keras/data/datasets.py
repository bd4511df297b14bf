"""From the `data` section of a config to (train, test) splits of any source."""

import logging

from dcl_keras.data import demo, pipeline, readers


def load_splits(data):
    """Returns (train, test) splits (FileSplit or TfdsSplit) for a config's `data` section.

    File splits are checked once for undecodable images under `data.bad_files`
    when `data.check_files` is set.
    """
    source = data.source
    if source == "demo":
        d = data.demo
        root = demo.ensure_demo_dataset(
            d.cache_dir or None, d.num_classes, d.train_per_class, d.test_per_class, d.image_size, d.seed
        )
        logging.info("Demo dataset at %s", root)
        train, test = readers.image_folder(root, "train"), readers.image_folder(root, "test")
    elif source == "image_folder":
        train = readers.image_folder(data.root, "train", data.test_fraction, data.get("split_seed", 0))
        test = readers.image_folder(data.root, "test", data.test_fraction, data.get("split_seed", 0))
    elif source == "annotation_lists":
        base = data.label_base
        if base is None:
            base = readers.detect_label_base(data.root, [data.train_list, data.test_list])
        train = readers.annotation_lists(data.root, data.train_list, data.num_classes, base)
        test = readers.annotation_lists(data.root, data.test_list, train.num_classes, base)
    elif source == "cub200":
        train, test = readers.cub200(data.root, "train"), readers.cub200(data.root, "test")
    elif source == "fgvc_aircraft":
        train = readers.fgvc_aircraft(data.root, data.aircraft_train_split, data.aircraft_level)
        test = readers.fgvc_aircraft(data.root, "test", data.aircraft_level)
    elif source == "tfds":
        kwargs = dict(
            data_dir=data.tfds_data_dir or None, manual_dir=data.tfds_manual_dir or None, prepare=data.tfds_prepare
        )
        train = readers.tfds(data.tfds_name, data.tfds_train_split, **kwargs)
        test = readers.tfds(data.tfds_name, data.tfds_test_split, **kwargs)
    else:
        raise ValueError(f"Unknown data source. Received: data.source={source!r}")
    if isinstance(train, readers.FileSplit) and data.check_files:
        train = pipeline.check_images(train, data.bad_files)
        test = pipeline.check_images(test, data.bad_files)
    logging.info(
        "Data: %d training and %d test examples, %d classes (%s).",
        train.num_examples,
        test.num_examples,
        train.num_classes,
        train.name,
    )
    return train, test
