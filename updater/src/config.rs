//! Layered KEY=VALUE configuration: /usr/lib < /run < /etc, drop-ins in name order, validated settings.
