"""Fixtures for the fp16 / mixed-precision tests: the audio transformer, its data, the outlier CNN."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.precision import models


@dataclass
class AudioModel:
    onnx_path: Path
    data: Path  # .npz with tokens and audio


@pytest.fixture(scope="session")
def audio_model(tmp_path_factory: pytest.TempPathFactory) -> AudioModel:
    root = tmp_path_factory.mktemp("audio")
    path = models.export_audio_transformer(root / "audio.onnx")
    return AudioModel(path, models.save_audio_data(root / "audio.npz"))


@dataclass
class OutlierCnn:
    onnx_path: Path
    calib: Path
    x_test: np.ndarray
    y_test: np.ndarray


@pytest.fixture(scope="session")
def outlier_cnn(tmp_path_factory: pytest.TempPathFactory) -> OutlierCnn:
    import torch

    from edgedeploy.pipeline.demo import load_digits_data, train_digits_cnn
    from edgedeploy.stages.export import ExportOptions, export_module

    root = tmp_path_factory.mktemp("outlier_cnn")
    data = load_digits_data()
    trained, _ = train_digits_cnn(data, epochs=6)
    path = root / "cnn.onnx"
    export_module(
        models.outlier_channel_cnn(trained),
        {"input": torch.from_numpy(data.x_test[:1])},
        path,
        ExportOptions(output_names=["logits"]),
    )
    calib = root / "calib.npz"
    np.savez(calib, input=data.x_train[:256])
    return OutlierCnn(path, calib, data.x_test, data.y_test)
