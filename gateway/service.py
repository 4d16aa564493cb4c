"""`carepulse gateway`: the edge gateway's components in one asyncio loop, until SIGINT or SIGTERM.

- the device `Registry` and the durable store-and-forward `DurableBuffer` under ``data_dir/gateway``;
- the `Publisher`, which sends the buffer to Kafka from its own thread;
- the BLE central on the controller named by ``ble_transport``;
- the tablet intake, served by uvicorn in this loop (access log off: URL paths carry resident ids);
- with ``--simulate``, the emulated care home on the virtual link and `HomeSimulator` driving it;
- a check of the buffer every few seconds (`Publisher.record_buffer`: its gauges and its level alarm), also
  while nothing arrives;
- the Prometheus endpoint ``/metrics`` (`carepulse.metrics.GATEWAY`) on ``metrics_host:gateway_metrics_port``
  (0: none). It is optional: if it cannot listen, that is logged and the gateway runs on without it.

Stop order is producers first: the simulation, then the central and the intake (nothing new enters the
buffer), then the publisher drains for a few seconds. Whatever it could not send stays in the durable
buffer and is replayed at the next start, so stopping never loses a reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from bumble.link import LocalLink

from carepulse import metrics as metrics_catalog
from carepulse.metrics import GATEWAY, GatewayMetrics
from carepulse.settings import Settings
from carepulse.simulation import CareHome
from gateway.ble.central import BleCentral
from gateway.ble.home import EmulatedHome
from gateway.ble.transport import VIRTUAL, open_controller_transport
from gateway.buffer import DurableBuffer
from gateway.intake import create_intake_app
from gateway.publisher import Publisher
from gateway.registry import Registry
from gateway.simulator import HomeSimulator

log = logging.getLogger(__name__)

#: How often the buffer's gauges and level are refreshed when no input or sending round does it.
BUFFER_CHECK_INTERVAL_S = 5.0
#: How long the publisher may keep sending at stop; the rest stays buffered for the next start.
DRAIN_TIMEOUT_S = 5.0
#: The demo tablet provisioned with --simulate; its token lives only in this process's memory.
DEMO_TABLET = "tablet-demo"


class _EmbeddedServer(uvicorn.Server):
    """uvicorn sharing our loop: the gateway owns SIGINT/SIGTERM, so uvicorn must not capture them (it would
    replace our handlers and re-raise the signal after its own shutdown)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def run_gateway(settings: Settings, *, simulate: bool, observation_interval_s: float = 3.0,
                metrics: GatewayMetrics = GATEWAY) -> int:
    """Run the gateway until SIGINT/SIGTERM, recording its metrics on `metrics`.

    Returns 0 after a clean stop, 1 if it could not start, 2 if misconfigured.
    """
    if simulate and settings.ble_transport != VIRTUAL:
        print(f"carepulse: --simulate drives the emulated care home, which needs CAREPULSE_BLE_TRANSPORT="
              f"{VIRTUAL} (it is {settings.ble_transport!r}); use --no-simulate with a real controller",
              file=sys.stderr)
        return 2
    return asyncio.run(_serve(settings, simulate=simulate, observation_interval_s=observation_interval_s,
                              metrics=metrics))


async def _serve(settings: Settings, *, simulate: bool, observation_interval_s: float,
                 metrics: GatewayMetrics) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    metrics.set_gateway_id(settings.gateway_id)
    metrics.last_event.set(time.time())  # "no event since" counts from the start, not from 1970
    gateway_dir = settings.data_dir / "gateway"
    try:
        registry, buffer = _open_storage(gateway_dir, settings.gateway_buffer_max_bytes)
    except (sqlite3.Error, OSError) as error:  # e.g. a disk so full that SQLite cannot create its files
        log.error("the gateway cannot open its registry and buffer under %s (%s); free disk space there or "
                  "set CAREPULSE_DATA_DIR", gateway_dir, error)
        return 1
    publisher = Publisher(settings.bootstrap, buffer, client_id=settings.gateway_id, metrics=metrics).start()
    async with contextlib.AsyncExitStack() as stack:
        # Callbacks run in reverse: the publisher drains last, after every producer of events has stopped,
        # and /metrics stops after everything else.
        metrics_server = metrics_catalog.serve_metrics_or_log(settings.gateway_metrics_port, metrics.registry,
                                                              settings.metrics_host, role="gateway")
        if metrics_server is not None:
            stack.callback(_stop_metrics, metrics_server)
        stack.callback(registry.close)
        stack.callback(buffer.close)
        stack.callback(_report_stopped, buffer)
        stack.push_async_callback(asyncio.to_thread, publisher.stop, drain_timeout_s=DRAIN_TIMEOUT_S)

        try:
            listener = _listen(settings.gateway_host, settings.gateway_port)
        except OSError as error:
            log.error("the tablet intake cannot listen on %s:%d (%s); "
                      "set CAREPULSE_GATEWAY_PORT to a free port",
                      settings.gateway_host, settings.gateway_port, error.strerror or error)
            return 1
        stack.callback(listener.close)

        transport = await open_controller_transport(settings.ble_transport)
        stack.push_async_callback(transport.close)
        central = BleCentral(transport.device, registry, publisher, gateway_id=settings.gateway_id,
                             metrics=metrics)

        app = create_intake_app(registry, publisher, gateway_id=settings.gateway_id)
        server = _EmbeddedServer(uvicorn.Config(
            app, host=settings.gateway_host, port=settings.gateway_port, access_log=False,
            log_level="warning",
        ))
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        stack.push_async_callback(_stop_server, server, serving)
        if not await _started(server, serving):
            log.error("the tablet intake did not start; gateway not started")
            return 1

        await central.start()
        stack.push_async_callback(central.stop)
        log.info("gateway %s: tablet intake on http://%s:%d, BLE transport %s, buffer %s",
                 settings.gateway_id, settings.gateway_host, settings.gateway_port, settings.ble_transport,
                 buffer.path)

        watching = asyncio.create_task(_watch_buffer(publisher, stopping))
        stack.push_async_callback(_cancel, watching)
        if simulate:
            simulator = await _start_simulation(settings, registry, transport.link, observation_interval_s,
                                                stack)
            simulation = asyncio.create_task(simulator.run(stopping))
            stack.push_async_callback(_finish, simulation)

        await stopping.wait()
        log.info("gateway stopping: draining the buffer for up to %.0f s "
                 "(the rest is kept for the next start)", DRAIN_TIMEOUT_S)
    return 0


def _open_storage(gateway_dir: Path, buffer_max_bytes: int) -> tuple[Registry, DurableBuffer]:
    registry = Registry(gateway_dir / "registry.sqlite")
    try:
        return registry, DurableBuffer(gateway_dir / "buffer.sqlite", buffer_max_bytes)
    except BaseException:
        registry.close()
        raise


async def _start_simulation(settings: Settings, registry: Registry, link: LocalLink | None,
                            observation_interval_s: float,
                            stack: contextlib.AsyncExitStack) -> HomeSimulator:
    """Provision the demo home (its residents, devices and a tablet) and start its devices."""
    assert link is not None, "run_gateway allows --simulate only on the virtual transport"
    care_home = CareHome(gateway_id=settings.gateway_id)
    residents = {resident.resident_id: care_home.location_id for resident in care_home.residents}
    token = registry.provision_tablet(DEMO_TABLET, care_home.location_id)
    deteriorating = [resident.resident_id for resident in care_home.residents if resident.deteriorating]
    home = EmulatedHome(link, registry, residents, pendant_wearers=deteriorating)
    await home.start()
    stack.push_async_callback(home.stop)
    log.info("simulating care home %s: %d residents, one deteriorating",
             care_home.location_id, len(residents))
    intake_url = f"http://{settings.gateway_host}:{settings.gateway_port}"
    return HomeSimulator(care_home, home, intake_url=intake_url, tablet_token=token,
                         observation_interval_s=observation_interval_s)


def _stop_metrics(server) -> None:
    server.shutdown()
    server.server_close()


def _listen(host: str, port: int) -> socket.socket:
    """The intake's listening socket, bound here: uvicorn calls sys.exit when it cannot bind, which would
    skip the orderly stop; an OSError here is handled like any other start-up failure."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError:
        listener.close()
        raise
    listener.setblocking(False)
    return listener


async def _started(server: uvicorn.Server, serving: asyncio.Task[None]) -> bool:
    """Wait until uvicorn serves; False if it gave up first (e.g. the app's start-up failed)."""
    while not server.started:
        if serving.done():
            return False
        await asyncio.sleep(0.05)
    return True


async def _stop_server(server: uvicorn.Server, serving: asyncio.Task[None]) -> None:
    server.should_exit = True
    with contextlib.suppress(SystemExit):
        await serving


async def _watch_buffer(publisher: Publisher, stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        # Also between sending rounds and inputs: the oldest message ages while the broker is unreachable, the
        # producer may spend its whole bootstrap timeout before a round fails, and another program may fill the
        # disk while nothing arrives.
        publisher.record_buffer()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), BUFFER_CHECK_INTERVAL_S)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _finish(task: asyncio.Task[None]) -> None:
    """Let a task that watches `stopping` end its current round; a failure in it is logged, not re-raised,
    so the rest of the stop sequence still runs."""
    try:
        await task
    except Exception:
        log.exception("the simulation failed")


def _report_stopped(buffer: DurableBuffer) -> None:
    log.info("gateway stopped; %d messages stay buffered for the next start", buffer.depth())
