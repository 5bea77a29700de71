"""The machine-wide agent cap: real processes sharing slot files under one OMX_HOME."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from omx.engine.slots import MachineSlots

HOLDER = """
import os, sys, time, threading
from pathlib import Path
from omx.engine.slots import MachineSlots
slots = MachineSlots(int(sys.argv[2]), Path(sys.argv[1]) / "slots")
mode = sys.argv[3]
if mode == "hold-forever":
    n = slots.try_acquire()
    print(n, flush=True)
    time.sleep(600)
else:  # race: several holds; inside each, count the holders that are in at the same moment
    inside = Path(sys.argv[1]) / "inside"
    for k in range(int(sys.argv[4])):
        with slots.hold(threading.Event()) as got:
            assert got
            me = inside / f"{os.getpid()}-{k}"
            me.touch()
            seen = len(os.listdir(inside))
            with open(Path(sys.argv[1]) / "seen", "a") as f:
                f.write(f"{seen}\\n")
            time.sleep(0.01)  # some work while holding the slot
            me.unlink()
"""


def _spawn(tmp: Path, maximum: int, mode: str, rounds: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp), str(maximum), mode, str(rounds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_processes_never_hold_more_slots_than_the_cap(tmp_path: Path) -> None:
    (tmp_path / "inside").mkdir()
    procs = [_spawn(tmp_path, 2, "race", 8) for _ in range(5)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    seen = [int(x) for x in (tmp_path / "seen").read_text().split()]
    assert len(seen) == 5 * 8
    assert max(seen) <= 2, f"more than 2 agents ran at once: {max(seen)}"


def test_a_held_slot_is_taken_when_its_holder_is_killed(tmp_path: Path) -> None:
    holders = [_spawn(tmp_path, 2, "hold-forever") for _ in range(2)]
    try:
        got = sorted(int((p.stdout.readline() if p.stdout else "").strip()) for p in holders)
        assert got == [0, 1]  # two processes, two different slots
        mine = MachineSlots(2, tmp_path / "slots")
        assert mine.try_acquire() is None  # the machine is full
        cancel = threading.Event()
        cancel.set()
        with mine.hold(cancel) as held:
            assert held is False  # a cancelled wait gives up rather than block
        holders[1].send_signal(signal.SIGKILL)
        holders[1].wait(timeout=10)
        with mine.hold(threading.Event()) as held:  # the kernel dropped the dead holder's lock
            assert held is True
            assert mine.try_acquire() is None
        assert mine.try_acquire() is not None  # released on leaving the block
        mine.close()
    finally:
        for p in holders:
            p.kill()
            p.communicate()


def test_threads_of_one_process_do_not_share_a_slot(tmp_path: Path) -> None:
    slots = MachineSlots(1, tmp_path / "slots")
    inside: list[int] = []
    most: list[int] = []
    lock = threading.Lock()
    gate = threading.Barrier(4)

    def run() -> None:
        gate.wait()
        for _ in range(20):
            with slots.hold(threading.Event()) as got:
                assert got
                with lock:
                    inside.append(1)
                    most.append(len(inside))
                with lock:
                    inside.pop()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(most) == 80
    assert max(most) == 1
    slots.close()


def test_slot_files_keep_the_portalocker_names(tmp_path: Path) -> None:
    slots = MachineSlots(3, tmp_path / "slots")
    with slots.hold(threading.Event()):
        pass
    names = os.listdir(tmp_path / "slots")
    assert len(names) == 1 and names[0] in {f"omx-agent.{i:02d}.lock" for i in range(3)}
    slots.close()


def test_a_dropped_slots_object_closes_its_files_without_a_warning(tmp_path: Path) -> None:
    import gc
    import warnings

    slots = MachineSlots(2, tmp_path / "slots")
    with slots.hold(threading.Event()):
        pass
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del slots
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    again = MachineSlots(1, tmp_path / "slots")
    assert again.try_acquire() is not None  # nothing is left locked
    again.close()
