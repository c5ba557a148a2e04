"""The topic table (meridian_common.topics) names every topic's consumers: it must match what
each service's handler actually reads, so a newcomer finds a topic's consumers in one hop."""

from __future__ import annotations

from meridian_common import topics
from meridian_execution.handler import ExecutionHandler
from meridian_features.handler import FeaturesHandler
from meridian_ledger.handler import LedgerHandler
from meridian_risk.handler import RiskHandler
from meridian_signals.bots.handler import BotsHandler
from meridian_signals.handler import SignalsHandler

HANDLERS = (FeaturesHandler, SignalsHandler, BotsHandler, RiskHandler, ExecutionHandler,
            LedgerHandler)


def test_every_input_is_listed_as_a_consumer_and_every_listed_service_reads_it() -> None:
    reads = {(h.name, topic) for h in HANDLERS for topic in h.inputs}
    for name, topic in sorted(reads):
        consumers = topics.spec(topic).consumers
        assert name in consumers or "all" in consumers, f"{name} reads {topic}: not listed"
    services = {h.name for h in HANDLERS}
    for spec in topics.TOPICS.values():
        for consumer in spec.consumers:
            if consumer in services:
                assert (consumer, spec.name) in reads, f"{spec.name} lists {consumer}: unread"


def test_every_output_names_its_producer() -> None:
    for h in HANDLERS:
        for topic in h.outputs:
            if topic == topics.CONTROL:
                continue  # operators, the control plane and the risk breakers all command
            assert topics.spec(topic).producer == h.name, (h.name, topic)
