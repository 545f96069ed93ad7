"""text-classifier: column roles at submit, text checks shared by training and serving, padding-exact
networks, and a small model trained, exported and served from raw strings."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from maas.data.profile import profile_columns
from maas.data.text import MAX_TEXT_CHARS, instance_text
from maas.errors import InvalidInput, PayloadTooLarge
from maas.models.base import DatasetInfo, PlanRequest
from maas.models.text_classifier import TEXT_CLASSIFIER, parse_hyperparameters
from maas.models.text_classifier_net import PAD_ID, TextNetConfig, build_network, reverse_within_length
from maas.serving.servable import ModelIdentity
from maas.serving.text_runtime import TextOnnxModel
from maas.training.results import TrainedModel
from maas.training.text_classifier import train_text_classifier

GOOD = ["great", "wonderful", "moving", "brilliant", "funny", "charming", "superb"]
BAD = ["dull", "boring", "awful", "tedious", "clumsy", "lifeless", "bland"]
FILLER = ["the", "film", "plot", "actors", "story", "was", "really", "quite", "a", "movie", "and", "its"]


def sentences(n: int, seed: int = 0) -> pd.DataFrame:
    """Generated reviews whose label is which word list they draw from (learnable, not trivial)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["fresh", "rotten"])
        words = rng.sample(FILLER, 5) + rng.sample(GOOD if label == "fresh" else BAD, 2)
        rng.shuffle(words)
        rows.append({"review": " ".join(words).capitalize() + ".", "verdict": label, "id": rng.random()})
    return pd.DataFrame(rows)


def dataset(columns: list[dict[str, Any]], kind: str = "tabular", rows: int = 100) -> DatasetInfo:
    return DatasetInfo(name="d", kind=kind, format="csv", row_count=rows, columns=columns)


TEXT = {"name": "review", "type": "text", "unique": 95, "missing": 0}
LABEL = {"name": "verdict", "type": "categorical", "unique": 2, "missing": 0}


# --- plan --------------------------------------------------------------------------------------------------


def test_plan_infers_the_text_and_the_label() -> None:
    plan = TEXT_CLASSIFIER.plan(dataset([TEXT, LABEL]), PlanRequest(target=None, task=None))
    assert plan.task == "classification" and plan.target == "verdict" and plan.roles == {"text": "review"}


def test_plan_takes_a_named_text_column_and_a_text_named_column() -> None:
    short = {"name": "text", "type": "categorical", "unique": 20, "missing": 0}
    other = {"name": "title", "type": "categorical", "unique": 20, "missing": 0}
    plan = TEXT_CLASSIFIER.plan(dataset([short, other, LABEL]), PlanRequest(target="verdict", task=None))
    assert plan.roles == {"text": "text"}
    named = TEXT_CLASSIFIER.plan(
        dataset([short, other, LABEL]), PlanRequest(target="verdict", task=None, columns={"text": "title"})
    )
    assert named.roles == {"text": "title"}


@pytest.mark.parametrize(
    ("columns", "request_", "field", "words"),
    [
        ([TEXT, LABEL, {"name": "n", "type": "numeric", "unique": 9}], PlanRequest(None, None), "target", "name"),
        ([TEXT, LABEL], PlanRequest("nope", None), "target", "not in the dataset"),
        ([TEXT, LABEL], PlanRequest("verdict", "regression"), "task", "only does classification"),
        ([TEXT, LABEL], PlanRequest("verdict", None, {"txt": "review"}), "columns", "unknown roles"),
        ([TEXT, LABEL], PlanRequest("verdict", None, {"text": "verdict"}), "columns", "both"),
        ([TEXT, {**LABEL, "unique": 1}], PlanRequest("verdict", None), "target", "single class"),
        ([{**TEXT, "name": "a"}, {**TEXT, "name": "b"}, LABEL], PlanRequest("verdict", None), "columns", "several"),
        ([{"name": "x", "type": "numeric"}, LABEL], PlanRequest("verdict", None), "columns", "no column holds"),
        (
            [{"name": "x", "type": "numeric"}, LABEL],
            PlanRequest("verdict", None, {"text": "x"}),
            "columns",
            "numeric values",
        ),
    ],
)
def test_plan_errors_name_the_field(
    columns: list[dict[str, Any]], request_: PlanRequest, field: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        TEXT_CLASSIFIER.plan(dataset(columns), request_)
    assert caught.value.errors[0]["loc"] == ["body", field]
    assert words in caught.value.detail


def test_plan_refuses_an_over_long_text_from_the_profile_before_any_job_runs() -> None:
    # a 2 MB text was accepted at submit and only failed the job in a worker; the profile now has max_length
    frame = sentences(30)
    frame.loc[3, "review"] = "word " * 400_000
    columns = profile_columns(frame)
    assert next(c for c in columns if c["name"] == "review")["stats"]["max_length"] == 2_000_000
    with pytest.raises(InvalidInput) as caught:
        TEXT_CLASSIFIER.plan(dataset(columns), PlanRequest("verdict", None, {"text": "review"}))
    assert caught.value.errors[0]["loc"] == ["body", "columns"]
    assert "2,000,000 characters" in caught.value.detail and "split long documents" in caught.value.detail
    within = profile_columns(sentences(30))
    assert TEXT_CLASSIFIER.plan(dataset(within), PlanRequest("verdict", None)).roles == {"text": "review"}
    # a version profiled before max_length existed still plans (its job fails naming the row instead)
    assert TEXT_CLASSIFIER.plan(dataset([TEXT, LABEL]), PlanRequest("verdict", None)).roles == {"text": "review"}


def test_plan_refuses_images() -> None:
    with pytest.raises(InvalidInput, match="trains on tables"):
        TEXT_CLASSIFIER.plan(dataset([TEXT, LABEL], kind="images"), PlanRequest("verdict", None))


def test_hyperparameters_are_bounded_and_described() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_hyperparameters({"encoder": "rnn", "vocab_size": 5, "surprise": 1})
    assert {tuple(e["loc"][1:]) for e in caught.value.errors} == {("encoder",), ("vocab_size",), ("surprise",)}
    with pytest.raises(InvalidInput, match="multiple of heads"):
        parse_hyperparameters({"encoder": "transformer", "embedding_dim": 30, "heads": 4})
    description = TEXT_CLASSIFIER.describe()
    assert description["name"] == "text-classifier" and "encoder" in description["hyperparameters"]["properties"]


# --- instance checks ---------------------------------------------------------------------------------------


def test_instance_text_accepts_strings_and_text_objects() -> None:
    assert instance_text("fine", 0) == "fine"
    assert instance_text({"text": "fine"}, 3) == "fine"


@pytest.mark.parametrize(
    ("instance", "words"),
    [
        ("", "empty"),
        ("  \n\t", "empty"),
        (5, "a number"),
        (None, "null"),
        (["a"], "an array"),
        ({"body": "x"}, '"text"'),
        ({"text": 1}, "a number"),
    ],
)
def test_bad_instances_name_the_index(instance: Any, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        instance_text(instance, 7)
    assert caught.value.detail.startswith("instance 7") and words in caught.value.detail
    assert caught.value.errors[0]["loc"][:3] == ["body", "instances", 7]


def test_over_long_text_is_too_large() -> None:
    with pytest.raises(PayloadTooLarge, match=f"at most {MAX_TEXT_CHARS}"):
        instance_text("a" * (MAX_TEXT_CHARS + 1), 0)


# --- networks: padding never changes a text's result ----------------------------------------------------------


def test_reverse_within_length_keeps_padding_and_is_an_involution() -> None:
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 0, 0, 0]])
    lengths = (ids != PAD_ID).sum(dim=1)
    assert reverse_within_length(ids, lengths).tolist() == [[7, 6, 5, 0, 0], [9, 8, 0, 0, 0]]
    assert torch.equal(reverse_within_length(reverse_within_length(ids, lengths), lengths), ids)


@pytest.mark.parametrize(
    "encoder_options",
    [
        {"encoder": "gru", "bidirectional": True, "num_layers": 2, "bag": True, "bigrams": 10},
        {"encoder": "lstm", "bidirectional": False},
        {"encoder": "transformer", "num_layers": 2, "heads": 2},
        {"encoder": "bag", "bigrams": 10},
        {"encoder": "gru", "members": 2, "bag": True, "bigrams": 10},
    ],
)
def test_padding_and_batching_do_not_change_results(encoder_options: dict[str, Any]) -> None:
    config = TextNetConfig(
        vocab_size=50, n_outputs=3, max_length=24, embedding_dim=16, hidden_size=8, **encoder_options
    )
    network = build_network(config).eval()
    texts = [[4, 9, 13, 2], [7, 7, 30, 41, 12, 3, 3], [22]]

    def padded(rows: list[list[int]], length: int) -> torch.Tensor:
        return torch.tensor([row + [PAD_ID] * (length - len(row)) for row in rows])

    with torch.no_grad():
        batch_short = network(padded(texts, 12))
        batch_long = network(padded(texts, 24))
        alone = torch.cat([network(padded([text], 24)) for text in texts])
    assert torch.allclose(batch_short, batch_long, atol=1e-5)
    assert torch.allclose(batch_long, alone, atol=1e-5)


# --- train, export, serve ---------------------------------------------------------------------------------------

SMALL = {"embedding_dim": 32, "hidden_size": 32, "bigrams": 200, "vocab_size": 300, "max_length": 16, "epochs": 8}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    frame = sentences(400)
    frame.loc[3, "review"] = "   "  # dropped and counted, like the missing ones
    frame.loc[5, "review"] = None
    frame.loc[8, "verdict"] = None
    checkpoint = tmp_path_factory.mktemp("text-ckpt")
    return train_text_classifier(
        frame, "review", "verdict", parse_hyperparameters(SMALL), checkpoint, lambda report: None, lambda: False
    )


def test_training_learns_and_reports(trained: TrainedModel) -> None:
    metrics = trained.metrics
    assert metrics["accuracy"] >= 0.9
    assert metrics["dropped_rows"] == 3
    assert metrics["labels"] == ["fresh", "rotten"] and "confusion_matrix" in metrics
    assert trained.signature["inputs"][0]["type"] == "string"
    assert trained.artifact_format == "onnx" and trained.hyperparameters["encoder"] == "gru"


def test_served_model_predicts_raw_strings_batch_equal_to_single(trained: TrainedModel) -> None:
    model = TextOnnxModel(
        ModelIdentity("mv_x", "reviews", 1), trained.artifact, trained.preprocessing, trained.signature
    )
    texts = ["A wonderful, moving and funny film.", {"text": "Dull and boring, a tedious plot."}, "superb " * 200]
    features = model.encode(texts, {})
    assert features.dtype == np.int64 and features.shape == (3, 16)
    answer = model.decode(model.run(features), {})
    assert answer["predictions"][:2] == ["fresh", "rotten"]
    for probabilities in answer["probabilities"]:
        assert abs(sum(probabilities.values()) - 1) < 1e-5
    alone = [model.run(model.encode([text], {}))[0] for text in texts]
    assert np.allclose(np.stack(alone), model.run(features), atol=1e-6)


def test_served_model_refuses_bad_instances_before_running(trained: TrainedModel) -> None:
    model = TextOnnxModel(
        ModelIdentity("mv_x", "reviews", 1), trained.artifact, trained.preprocessing, trained.signature
    )
    with pytest.raises(InvalidInput, match="instance 1: the text is empty"):
        model.encode(["fine", " "], {})
    with pytest.raises(PayloadTooLarge, match="instance 0"):
        model.encode(["x" * 2_000_000], {})


def test_over_long_training_text_fails_naming_the_row(tmp_path: Path) -> None:
    frame = sentences(40)
    frame.loc[6, "review"] = "word " * (MAX_TEXT_CHARS // 5 + 1)
    with pytest.raises(InvalidInput, match="row 7: the text in 'review'"):
        train_text_classifier(
            frame, "review", "verdict", parse_hyperparameters(SMALL), tmp_path, lambda report: None, lambda: False
        )
    assert not any(tmp_path.iterdir())  # nothing written


def test_resume_from_checkpoint_repeats_the_run(tmp_path: Path) -> None:
    frame = sentences(120, seed=1)
    hp = parse_hyperparameters({**SMALL, "epochs": 3, "early_stopping_patience": 0})
    fold = np.arange(0, 120, 5)  # a fixed test split, as a cross-validation fold gives
    first = train_text_classifier(
        frame, "review", "verdict", hp, tmp_path / "a", lambda r: None, lambda: False, test_rows=fold
    )
    again = train_text_classifier(
        frame, "review", "verdict", hp, tmp_path / "a", lambda r: None, lambda: False, test_rows=fold
    )
    assert again.metrics["accuracy"] == first.metrics["accuracy"] and again.epochs_run == 3
    assert first.metrics["test_rows"] == len(fold) and first.metrics["validation_rows"] == 10


def test_an_ensemble_trains_exports_and_serves(tmp_path: Path) -> None:
    hp = parse_hyperparameters({**SMALL, "epochs": 2, "members": 2})
    trained = train_text_classifier(
        sentences(120, seed=4), "review", "verdict", hp, tmp_path, lambda r: None, lambda: False
    )
    model = TextOnnxModel(ModelIdentity("mv_e", "ens", 1), trained.artifact, trained.preprocessing, trained.signature)
    answer = model.decode(model.run(model.encode(["great film", "dull film"], {})), {})
    assert len(answer["predictions"]) == 2 and trained.hyperparameters["members"] == 2
