import gzip
import struct

import numpy as np
import pytest

from tamis.data import DataNotFoundError, load_fashion_mnist, load_image_dataset, read_idx


def test_missing_fashion_mnist_names_the_package(tmp_path):
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", tmp_path)


def test_fallback_to_digits_with_notice(tmp_path):
    with pytest.warns(UserWarning, match="Falling back to scikit-learn's 8x8 digits"):
        ds = load_image_dataset("test", tmp_path)
    assert ds.name == "digits" and ds.images.shape[1:] == (8, 8)
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0


def test_idx_roundtrip_and_truncation(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = struct.pack(">BBBB3I", 0, 0, 0x08, 3, 2, 3, 4) + images.tobytes()
    good = tmp_path / "x-idx3-ubyte.gz"
    good.write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(good), images)
    bad = tmp_path / "y-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(ValueError, match="truncated or corrupted"):
        read_idx(bad)


def test_demo_task_falls_back_and_attributes(tmp_path):
    from tamis.attribution import Attributor, ProjectionConfig
    from tamis.attribution.config import BuildConfig, ScoreConfig
    from tamis.attribution.examples import fashion_cnn

    bundle = fashion_cnn(cache_dir=tmp_path / "c", data_dir=tmp_path, n_train=120, n_queries=4,
                         epochs=1, progress=False)
    assert bundle.info["dataset"] == "digits" and "Falling back" in bundle.info["notice"]
    attributor = Attributor(bundle.task, bundle.model, tmp_path / "s", rank_c=2, rank_r=8,
                            projection=ProjectionConfig(d1=8, d2=8, clip_to_layer=True),
                            build=BuildConfig(progress=False))
    result = attributor.fit(bundle.train).score(bundle.queries, ScoreConfig(progress=False))
    assert result.scores.shape == (4, 120) and result.helpful.indices.shape == (4, 10)
