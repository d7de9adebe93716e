"""A user's own data: folders of PNG/JPEG images, .npz/.npy files, torchvision names, the host
path (training images in host memory, each minibatch copied to the device)."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from pyro_vae import data as data_mod
from pyro_vae.cli import main
from pyro_vae.data import DataConfig, load_dataset, resolve_data_on, split_indices
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.image_files import read_folder
from pyro_vae.models import build_model
from pyro_vae.runtime import set_seed
from pyro_vae.train import TrainConfig, train

TINY = ["--latent-dim", "2", "--hidden", "16", "--batch-size", "32", "--no-progress",
        "--eval-samples", "50"]


def _grey_digits(num: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """uint8 8x8 digits (0..255) and their labels, from scikit-learn's data set."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images[:num] * 255 / 16).round().astype(np.uint8), bunch.target[:num]


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """Digits written as grey PNGs into class sub-folders digit_0 ... digit_9."""
    root = tmp_path_factory.mktemp("own") / "digits"
    images, labels = _grey_digits()
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / f"digit_{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(root / f"digit_{label}" / f"{i:04d}.png")
    return root


def _rgb_folder(root, num=12, size=(6, 5)):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(num):  # the first one a JPEG
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8), "RGB").save(
            root / f"{i:02d}.{'jpg' if i == 0 else 'png'}")
    return root


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_folder_with_class_sub_folders_is_labelled_grey_images_split_by_class(digit_folder):
    d = load_dataset(str(digit_folder))
    images, labels = _grey_digits()
    assert d.shape == (1, 8, 8) and d.num_train + len(d.test_x) == len(images)
    assert d.binarize == "dynamic" and d.kind == "image"
    # sorted sub-folder names -> 0..9; the test split holds 10% of each class
    expected = np.bincount(labels, minlength=10)
    counts = torch.bincount(d.train_y, minlength=10) + torch.bincount(d.test_y, minlength=10)
    assert counts.tolist() == expected.tolist()
    assert torch.bincount(d.test_y, minlength=10).tolist() == \
        [max(1, round(0.1 * c)) for c in expected]
    # values are k/255 exactly, and each training image is one of the digits of its class
    grey = d.train_x * 255
    assert torch.equal(grey, grey.round())
    by_bytes = {img.tobytes(): int(y) for img, y in zip(images, labels, strict=True)}
    for x, y in zip(d.train_x[:20], d.train_y[:20], strict=True):
        assert by_bytes[(x[0] * 255).round().to(torch.uint8).numpy().tobytes()] == int(y)
    again = load_dataset(str(digit_folder))  # the split is seeded
    assert torch.equal(d.train_x, again.train_x) and torch.equal(d.test_y, again.test_y)


def test_hidden_files_and_folders_are_skipped(tmp_path):
    folder = _rgb_folder(tmp_path / "rgb", num=4)
    (folder / "._00.png").write_bytes(b"macOS resource fork")
    _rgb_folder(folder / ".ipynb_checkpoints", num=2)
    x, labels, _ = read_folder(folder)
    assert x.shape == (4, 3, 6, 5) and labels is None


def test_decoding_with_worker_processes_gives_the_same_array(digit_folder):
    x0, y0, classes = read_folder(digit_folder, num_workers=0)
    x2, y2, _ = read_folder(digit_folder, num_workers=2)
    assert classes == [f"digit_{c}" for c in range(10)]
    assert x0.dtype == np.uint8 and np.array_equal(x0, x2) and np.array_equal(y0, y2)


def test_an_rgb_folder_has_three_channels_and_is_not_binarized(tmp_path):
    folder = _rgb_folder(tmp_path / "rgb")
    d = load_dataset(str(folder))
    assert d.shape == (3, 6, 5) and d.binarize == "none" and d.train_y is None
    assert d.num_train == 11 and len(d.test_x) == 1  # round(0.1 * 12)
    grey = load_dataset(str(folder), options=DataConfig(channels="grey", image_size="4x3"))
    assert grey.shape == (1, 4, 3) and grey.binarize == "dynamic"
    big = load_dataset(str(folder), options=DataConfig(image_size=8))
    assert big.shape == (3, 8, 8)


def test_npz_and_npy_images_and_real_arrays(tmp_path):
    images, labels = _grey_digits(50)
    np.savez(tmp_path / "hwc.npz", x=np.repeat(images[..., None], 3, -1), y=labels)
    d = load_dataset(str(tmp_path / "hwc.npz"))
    assert d.shape == (3, 8, 8) and d.binarize == "none" and d.train_y is not None
    assert torch.equal(d.train_x[:, 0], d.train_x[:, 2])  # channels last -> first
    np.save(tmp_path / "floats.npy", images.astype(np.float32) / 255)
    f = load_dataset(str(tmp_path / "floats.npy"))
    assert f.shape == (1, 8, 8) and f.binarize == "dynamic" and f.num_train == 45
    np.savez(tmp_path / "real.npz", x=np.random.default_rng(0).normal(size=(40, 3)) * 10)
    r = load_dataset(str(tmp_path / "real.npz"))
    assert r.kind == "real" and r.shape == (3,) and r.binarize == "none"
    with pytest.raises(ConfigError, match="images only"):
        load_dataset(str(tmp_path / "real.npz"), options=DataConfig(image_size=4))


def test_split_without_labels_is_a_fixed_fraction_and_seeded():
    train, test = split_indices(50, None, "x")
    assert len(test) == 5 and len(train) == 45 and not set(train) & set(test)
    assert np.array_equal(test, split_indices(50, None, "x")[1])


def test_train_resume_evaluate_reopen_the_folder(digit_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _run(["train", "vae", "--dataset", digit_folder, "--epochs", "1",
                         "--out", out, *TINY], capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == str(digit_folder.resolve())
    assert config["data"] == {"image_size": None, "channels": None, "data_on": "auto"}
    assert config["binarize"] == "dynamic"
    code, _, err = _run(["train", "--resume", "--out", out, "--epochs", "2", "--data-on", "host",
                         "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
    code, _, err = _run(["train", "--resume", "--out", out, "--epochs", "3",
                         "--image-size", "16", "--no-progress"], capsys)
    assert code == 2 and "--image-size" in err
    code, out_text, err = _run(["evaluate", out, "--num-samples", "50", "--no-progress"], capsys)
    assert code == 0 and "test ELBO" in out_text, err


def test_a_moved_data_folder_is_one_line(digit_folder, tmp_path, capsys):
    folder = shutil.copytree(digit_folder, tmp_path / "mine")
    out = tmp_path / "run"
    assert _run(["train", "vae", "--dataset", folder, "--epochs", "1", "--out", out, *TINY,
                 "--eval-samples", "0"], capsys)[0] == 0
    folder.rename(tmp_path / "elsewhere")
    for argv in (["evaluate", out, "--no-progress"], ["train", "--resume", "--out", out,
                                                      "--epochs", "2"]):
        code, _, err = _run(argv, capsys)
        assert code == 2 and err.count("\n") == 1 and str(folder) in err, err
        assert "moved or deleted" in err and "does not exist" in err


def _corrupt(root):
    _rgb_folder(root)
    (root / "05.png").write_bytes(b"not a png at all")
    return root, "05.png"


def _mixed_sizes(root):
    _rgb_folder(root, num=3)
    Image.new("RGB", (9, 9)).save(root / "big.png")
    return root, "big.png"


def _empty(root):
    root.mkdir()
    return root, str(root)


def _no_images(root):
    root.mkdir()
    (root / "notes.txt").write_text("hello")
    return root, "no PNG or JPEG"


def _npz(**arrays):
    def make(root):
        root.mkdir()
        np.savez(root / "d.npz", **arrays)
        return root / "d.npz", "d.npz"
    return make


def _missing(root):
    return root / "nowhere", "nowhere"


def _missing_relative(root):
    return "no/such/folder", "no/such/folder"


def _not_data(root):
    root.mkdir()
    (root / "d.csv").write_text("1,2\n")
    return root / "d.csv", "d.csv"


BAD = {
    "corrupt-image": _corrupt,
    "mixed-sizes": _mixed_sizes,
    "empty-folder": _empty,
    "no-images": _no_images,
    "npz-without-x": _npz(images=np.zeros((4, 8, 8))),
    "wrong-dims": _npz(x=np.zeros((4, 2, 8, 8))),
    "nan": _npz(x=np.full((4, 3), np.nan)),
    "labels-mismatch": _npz(x=np.zeros((4, 8, 8), np.uint8), y=np.arange(3)),
    "image-out-of-range": _npz(x=np.full((4, 8, 8), 2.0)),
    "one-point": _npz(x=np.zeros((1, 8, 8), np.uint8)),
    "missing-path": _missing,
    "missing-relative-path": _missing_relative,
    "not-a-data-file": _not_data,
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_one_line_naming_the_file(case, tmp_path, capsys):
    path, named = BAD[case](tmp_path / "data")
    out = tmp_path / "run"
    code, _, err = _run(["train", "vae", "--dataset", path, "--epochs", "1", "--out", out,
                         *TINY], capsys)
    assert code == 2 and err.startswith("pyro-vae: error: ") and err.count("\n") == 1, err
    assert named in err
    assert not (out / "config.json").exists()


@pytest.mark.parametrize("argv", [["--image-size", "0"], ["--image-size", "3x"],
                                  ["--channels", "cmyk"], ["--data-on", "disk"]])
def test_bad_data_options_are_one_line(argv, capsys):
    code, _, err = _run(["train", "vae", "--dataset", "digits", *argv, *TINY], capsys)
    assert code == 2 and err.count("\n") == 1, err


def test_torchvision_names_download_to_the_cache_or_say_offline(monkeypatch, tmp_path):
    import torchvision.datasets as tvd

    monkeypatch.setenv("PYRO_VAE_DATA", str(tmp_path))

    class FakeCIFAR10:  # what torchvision's class holds once downloaded
        def __init__(self, root, train, download):
            assert root == str(tmp_path) and download
            n = 20 if train else 10
            self.data = np.full((n, 32, 32, 3), 255 if train else 0, np.uint8)
            self.targets = [i % 10 for i in range(n)]

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR10)
    d = load_dataset("cifar10", options=DataConfig(image_size=16))
    assert d.shape == (3, 16, 16) and d.binarize == "none" and d.num_train == 20
    assert torch.equal(d.train_x, torch.ones_like(d.train_x))

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading cifar-10-python.tar.gz:\nTraceback ...")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    with pytest.raises(DataError, match="could not get CIFAR-10") as info:
        load_dataset("cifar10")
    assert "\n" not in str(info.value)


def test_auto_feeds_from_the_host_when_the_data_exceed_half_the_free_memory(monkeypatch):
    assert resolve_data_on("auto", 10**12, torch.device("cpu")) == "device"
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 4000))
    cuda = torch.device("cuda")
    assert resolve_data_on("auto", 501, cuda) == "host"
    assert resolve_data_on("auto", 500, cuda) == "device"
    assert resolve_data_on("device", 10**12, cuda) == "device"


@pytest.mark.parametrize("binarize", ["dynamic", "fixed"])
def test_host_fed_and_device_resident_training_reach_identical_parameters(binarize,
                                                                           monkeypatch):
    calls = []
    host_batch = data_mod.Dataset._host_batch
    monkeypatch.setattr(data_mod.Dataset, "_host_batch",
                        lambda self, idx: calls.append(len(idx)) or host_batch(self, idx))
    states = {}
    for data_on in ("host", "device"):
        data = load_dataset("digits", binarize=binarize, options=DataConfig(data_on=data_on))
        assert data.on_host == (data_on == "host") and data.device == torch.device("cpu")
        set_seed(3)
        model = build_model("vae", data.shape, latent_dim=2, hidden=(16,))
        train(model, data, TrainConfig(epochs=2, batch_size=100, seed=3), progress=False)
        states[data_on] = model.state_dict()
    assert calls == [100] * (2 * 14)  # the host path ran, one gather per minibatch
    for key, value in states["device"].items():
        assert torch.equal(value, states["host"][key]), key


@pytest.mark.parametrize("binarize", ["dynamic", "none", "fixed"])
def test_host_fed_8_bit_images_wait_as_uint8_and_train_as_the_float_ones(digit_folder, binarize):
    """A folder's 8-bit images (and fixed-binarized ones) stay on the host as uint8, a quarter
    of float32's bytes; decoded on the device they are the same float32 values, so a seeded
    run reaches the same parameters as with device-resident data."""
    host = load_dataset(str(digit_folder), binarize=binarize, options=DataConfig(data_on="host"))
    resident = load_dataset(str(digit_folder), binarize=binarize,
                            options=DataConfig(data_on="device"))
    assert host.train_x.dtype == torch.uint8 and resident.train_x.dtype == torch.float32
    assert host.train_x.nbytes * 4 == resident.train_x.nbytes
    assert torch.equal(host.train_values(), resident.train_x)
    assert torch.equal(host.train_eval_x(), resident.train_eval_x())
    likelihood = "bernoulli" if binarize != "none" else "logistic"
    states = {}
    for data in (host, resident):
        set_seed(5)
        model = build_model("vae", data.shape, latent_dim=2, hidden=(16,), likelihood=likelihood)
        train(model, data, TrainConfig(epochs=2, batch_size=16, seed=5), progress=False)
        states[data.on_host] = model.state_dict()
    for key, value in states[False].items():
        assert torch.equal(value, states[True][key]), key


def test_a_host_fed_rank_gets_the_same_shard(monkeypatch):
    host = load_dataset("digits", binarize="none", options=DataConfig(data_on="host"))
    resident = load_dataset("digits", binarize="none", options=DataConfig(data_on="device"))
    perm = host.permutation()
    for rank in (0, 1):
        for (xh, yh), (xd, yd) in zip(host.batches(100, perm=perm, rank=rank, world=2),
                                      resident.batches(100, perm=perm, rank=rank, world=2),
                                      strict=True):
            assert len(xh) == 50 and torch.equal(xh, xd) and torch.equal(yh, yd)


@pytest.mark.cuda
def test_host_fed_cuda_training_matches_device_resident():
    states = {}
    for data_on in ("host", "device"):
        data = load_dataset("digits", device="cuda", options=DataConfig(data_on=data_on))
        assert data.device.type == "cuda" and data.test_x.device.type == "cuda"
        assert (data.train_x.device.type == "cpu") == (data_on == "host")
        x, _ = next(data.batches(64))
        assert x.device.type == "cuda"
        set_seed(3)
        model = build_model("vae", data.shape, latent_dim=2, hidden=(16,)).to("cuda")
        train(model, data, TrainConfig(epochs=1, batch_size=100, seed=3, device="cuda"),
              progress=False)
        states[data_on] = model.state_dict()
    for key, value in states["device"].items():
        assert torch.equal(value, states["host"][key]), key


def test_a_colour_folder_trains_with_the_8_bit_likelihood_and_reports_bits_per_dimension(
        tmp_path, capsys):
    """The issue's must-hold: a folder of RGB PNGs -> `pyro-vae train vae --likelihood logistic
    --arch conv` -> metrics.json and the summary in bits per dimension (nats / (D ln 2))."""
    folder = tmp_path / "colour"
    rng = np.random.default_rng(1)
    for label, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
        (folder / f"c{label}").mkdir(parents=True)
        for i in range(24):
            image = np.zeros((12, 12, 3), np.uint8)
            r, c = rng.integers(0, 6, 2)
            image[r:r + 6, c:c + 6] = colour
            Image.fromarray(image, "RGB").save(folder / f"c{label}" / f"{i:02d}.png")
    out = tmp_path / "run"
    code, text, err = _run(["train", "vae", "--dataset", folder, "--likelihood", "logistic",
                            "--arch", "conv", "--epochs", "2", "--out", out, *TINY], capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["binarize"] == "none"  # colour images are not binarized
    metrics = json.loads((out / "metrics.json").read_text())
    dims = 3 * 12 * 12
    assert metrics["bpd_dims"] == dims
    assert metrics["test_elbo_bpd"] == pytest.approx(-metrics["test_elbo"] / (dims * np.log(2)))
    assert metrics["test_log_likelihood_bpd"] == pytest.approx(
        -metrics["test_log_likelihood"] / (dims * np.log(2)))
    assert 0 < metrics["test_log_likelihood_bpd"] <= metrics["test_elbo_bpd"] < 8
    assert "bits/dim" in text
    with Image.open(out / "samples.png") as picture:
        assert picture.mode == "RGB"
