"""Transport: one interface, two implementations (Kafka and in-process).

Handlers never see the transport; the host (`meridian_common.host`) moves records between a Bus
and a Handler. `open_bus` picks the implementation from the settings.
"""

from meridian_common.bus.base import Bus, Consumer, Producer, Record, TopicConfig, partition_for

__all__ = ["Bus", "Consumer", "Producer", "Record", "TopicConfig", "partition_for"]
