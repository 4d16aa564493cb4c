"""carepulse: continuous care-quality indicators from care-home and homecare events.

This package holds what every room shares: settings (`settings`), event contracts (`events`),
the topic catalog (`topics`), the embedded broker (`broker`) and the command line (`cli`).
The clinical and indicator logic lives in the pure `indicators` package; `streams`, `gateway`
and the feed are adapters around it.
"""

__version__ = "0.1.0"
