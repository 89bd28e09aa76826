"""``python -m baxo_mqtt`` is the same as the ``baxo-mqtt`` command."""

from baxo_mqtt.cli import main

raise SystemExit(main())
