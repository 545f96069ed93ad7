"""An endpoint serves only a model its runtimes can load: embedding and language models are /v1's (issue 8).

Creation, a switch to another model, and a predict on an endpoint an older version let through: each is a
4xx naming where such a model is served, where predict was a KeyError (500) in the runtime table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from maas.db.engine import make_engine, make_session_factory, session_scope
from maas.db.tables import Base, Endpoint, Model, ModelVersion, Tenant
from maas.errors import Conflict, InvalidInput
from maas.serving import endpoints
from maas.serving.loaders import RUNTIMES

TENANT = "ten_a"


def _model(session: Session, name: str, family: str) -> None:
    model = Model(id=f"mdl_{name}", tenant_id=TENANT, name=name, family=family, task="x")
    session.add(model)
    session.add(
        ModelVersion(
            id=f"mv_{name}",
            model_id=model.id,
            tenant_id=TENANT,
            version=1,
            artifact_digest="0" * 64,
            preprocessing={},
            signature={},
            metrics={},
            hyperparameters={},
            lineage={},
        )
    )


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'maas.db'}")
    Base.metadata.create_all(engine)
    made = make_session_factory(engine)
    with session_scope(made) as session:
        session.add(Tenant(id=TENANT, name="a"))
        session.flush()
        _model(session, "tabular", "tabular-mlp")
        _model(session, "encoder", "embedding")
        _model(session, "chatty", "causal-lm")
    yield made
    engine.dispose()


def test_the_runtime_table_is_what_decides() -> None:
    assert "tabular-mlp" in RUNTIMES and "embedding" not in RUNTIMES and "causal-lm" not in RUNTIMES


@pytest.mark.parametrize(("model", "served_by"), [("encoder", "/v1/embeddings"), ("chatty", "/v1/chat/completions")])
def test_creating_an_endpoint_on_a_v1_model_is_refused(
    factory: sessionmaker[Session], model: str, served_by: str
) -> None:
    with session_scope(factory) as session, pytest.raises(InvalidInput) as refused:
        endpoints.create_endpoint(session, tenant_id=TENANT, name="e", model=model, version=None, alias=None)
    assert served_by in refused.value.detail and refused.value.errors[0]["loc"] == ["body", "model"]
    with session_scope(factory) as session:
        assert endpoints.list_endpoints(session, TENANT) == []


def test_switching_an_endpoint_to_a_v1_model_is_refused(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as session:
        endpoints.create_endpoint(session, tenant_id=TENANT, name="e", model="tabular", version=None, alias=None)
    with session_scope(factory) as session, pytest.raises(InvalidInput) as refused:
        endpoints.update_endpoint(session, tenant_id=TENANT, name="e", model="encoder", version=1, alias=None)
    assert "/v1/embeddings" in refused.value.detail
    with session_scope(factory) as session:
        assert endpoints.resolve_endpoint(session, tenant_id=TENANT, name="e").id == "mv_tabular"


def test_predict_on_an_endpoint_an_older_version_let_through_is_a_conflict(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as session:
        session.add(Endpoint(id="ep_old", tenant_id=TENANT, name="old", model_id="mdl_encoder", alias="latest"))
    with session_scope(factory) as session, pytest.raises(Conflict) as refused:
        endpoints.resolve_endpoint(session, tenant_id=TENANT, name="old")
    assert "/v1/embeddings" in refused.value.detail
    with session_scope(factory) as session:  # still listed with the version it names, so it can be deleted
        endpoint = endpoints.get_endpoint(session, TENANT, "old")
        assert endpoints.serving_version(session, endpoint).id == "mv_encoder"
