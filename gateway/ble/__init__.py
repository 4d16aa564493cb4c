"""The gateway's Bluetooth LE side, on Google's bumble stack.

- `central`: the gateway's BLE central. It scans passively for BTHome advertisements (ble_health.md §11)
  and connects to registered GATT health devices (§5-§10), then publishes events.
- `transport`: opens the controller the central runs on. That is a USB or HCI-socket dongle, or, for
  "virtual", an in-process bumble `LocalLink` shared with emulated devices.
- One module per GATT service, in the style of bumble's profiles: the server template, the client
  side (which characteristics a collector subscribes to) and an emulated device. These are
  `pulse_oximeter`, `blood_pressure`, `health_thermometer`, `heart_rate` and `weight_scale`.
  `bthome` has the BTHome advertisers (fall pendant, call bell, smart cup) and the receiver's mapping
  of BTHome objects to reading values.
- `devices`: the plumbing every emulated device shares. Each one is a full bumble `Device` (host, HCI,
  ATT, SMP) on a virtual controller, so the central runs the same code path it runs on a real radio.
- `home`: `EmulatedHome`, a small care home of emulated devices, provisioned in a `Registry`.
"""
