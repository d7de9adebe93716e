"""Latent interpolation, traversal and map: decoding by conditioning, and the CLI command."""

import torch

from pyro_vae.cli import main
from pyro_vae.data import load_dataset
from pyro_vae.evaluate import latent_means
from pyro_vae.latent_plots import decode_codes, save_latent_pictures, traversal_order
from pyro_vae.models import build_model


def test_decoding_by_conditioning_is_the_decoder():
    data = load_dataset("digits")
    model = build_model("vae", data.shape, latent_dim=3, hidden=(16,)).eval()
    z = torch.randn(7, 3)
    assert torch.allclose(decode_codes(model, z, data.test_x), model.decode(z))
    means = latent_means(model, data.test_x[:5])
    assert torch.allclose(means, model.encode(data.test_x[:5])[0])
    order, codes = traversal_order(model, data.test_x)
    assert codes.var(0)[order].tolist() == sorted(codes.var(0).tolist(), reverse=True)


def test_run_pictures_for_images_and_for_points(tmp_path):
    digits = load_dataset("digits")
    model = build_model("ae", digits.shape, latent_dim=3, hidden=(16,))
    names = {p.name for p in save_latent_pictures(model, digits, tmp_path / "d")}
    assert names == {"interpolation.png", "traversal.png", "latent_map.png"}
    points = load_dataset("linear-gaussian")
    linear = build_model("linear", points.shape)
    assert [p.name for p in save_latent_pictures(linear, points, tmp_path / "p")] == [
        "latent_map.png"]


def test_plot_command(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "vae", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2",
                 "--hidden", "16", "--eval-samples", "0", "--no-progress", "--beta", "2",
                 "--out", str(run)]) == 0
    assert (run / "traversal.png").is_file() and (run / "latent_map.png").is_file()
    for kind in ("interpolation", "traversal", "latent-map"):
        out = tmp_path / f"{kind}.png"
        assert main(["plot", str(run), "--kind", kind, "--out", str(out)]) == 0
        assert out.stat().st_size > 0
    capsys.readouterr()
    assert main(["plot", str(run), "--kind", "traversal", "--out", str(tmp_path / "a.jpg")]) == 2
    assert "must name a .png file" in capsys.readouterr().err
    assert main(["plot", str(run), "--kind", "nope", "--out", str(tmp_path / "a.png")]) == 2
