"""One line on stderr while Numba compiles tinycnn's kernels, so that a first run does not sit silent.

    compiling kernels for the first run (cached afterwards)… 23 compiled [00:14]

The CPU kernels are `@njit(cache=True)` functions compiled on their first call and kept in Numba's disk
cache (`__pycache__` beside the kernel files, or `$NUMBA_CACHE_DIR`): a run with an empty cache (the first
one, or the first after an upgrade) compiles every kernel it uses, for tens of seconds; later runs load them
in milliseconds. `install()` (called once by `tinycnn/kernels/cpu/__init__.py`, where the kernels are first
loaded) registers a listener on Numba's "numba:compile" event, which Numba fires for a cache miss only,
never for a kernel loaded from the cache: a warm run prints nothing.

On a terminal the line is a tqdm counter (the progress bars of fit are tqdm bars too, so the two share the
terminal), shown while a kernel compiles and cleared between two, so that what the program prints meanwhile
(a model summary) starts on a clean line; once no kernel has compiled for QUIET_SECONDS it is printed for
good, with the count and the time. In a log file or a pipe: the message when the first kernel starts
compiling, and "… N kernels compiled in S s" when the burst ends. The count includes the helpers compiled
inside a kernel. A later burst (validation's kernels, another model)
gets a line of its own only if it lasts LATER_BURST_SECONDS: a kernel or two compiling in a blink stays
silent. TINYCNN_COMPILE_NOTICE=0 turns it off. Numba's own helpers (its string formatting, array creation)
and code outside tinycnn compile silently: they are not counted.
"""
import atexit
import os
import sys
import threading
import time

from numba.core import event as numba_event

MESSAGE = "compiling kernels for the first run (cached afterwards)…"
QUIET_SECONDS = 0.5         # no compile for this long ends a burst (and its line)
LATER_BURST_SECONDS = 1.0   # after the first burst, a burst gets a line only once it lasts this long
_state = {"listener": None}


def enabled():
    return os.environ.get("TINYCNN_COMPILE_NOTICE", "1") not in ("0", "")


def install(stream=None):
    """Register the listener (once per process; nothing when TINYCNN_COMPILE_NOTICE=0). `stream`: where the
    line goes (default: sys.stderr at the time of the first compile)."""
    if _state["listener"] is not None or not enabled():
        return _state["listener"]
    listener = _Notice(stream)
    numba_event.register("numba:compile", listener)
    atexit.register(listener.close)
    _state["listener"] = listener
    return listener


def _is_tinycnn(event):
    dispatcher = event.data.get("dispatcher") if isinstance(event.data, dict) else None
    module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
    return module.split(".")[0] in ("tinycnn", "kernels")


class _Notice(numba_event.Listener):
    """Numba's compile events (start and end of each compile) -> the line. Compiles are serialised by Numba's
    global compiler lock; the lock here guards against the watcher thread, which ticks the line and ends it."""

    def __init__(self, stream=None):
        self.stream, self.bar, self.lock = stream, None, threading.Lock()
        self.in_burst = self.showing = self.shown_once = False
        self.compiled, self.active, self.started, self.started_wall, self.last_end = 0, 0, 0.0, 0.0, 0.0

    def notify(self, event):
        if not _is_tinycnn(event):
            return
        if event.is_start:
            self.on_start(event)
        elif event.is_end:
            self.on_end(event)

    def on_start(self, event):
        with self.lock:
            self.active += 1
            if not self.in_burst:
                self.in_burst, self.compiled = True, 0
                self.started, self.started_wall = time.monotonic(), time.time()
                threading.Thread(target=self._watch, name="tinycnn-compile-notice", daemon=True).start()
                if not self.shown_once:
                    self._show()
            elif self.showing:
                self._open_bar()

    def on_end(self, event):
        with self.lock:
            self.active -= 1
            self.compiled += 1
            self.last_end = time.monotonic()
            if self.bar is not None:
                self.bar.update(1)
                if self.active == 0:  # between two kernels the line is cleared: what others print lands on
                    self._close_bar()  # a clean line, not after the counter

    def _watch(self):
        """Show a later burst once it has lasted LATER_BURST_SECONDS, tick the elapsed time, and end the line
        once no kernel has compiled for QUIET_SECONDS."""
        while True:
            time.sleep(0.1)
            with self.lock:
                if not self.in_burst:
                    return
                now = time.monotonic()
                if self.active == 0 and now - self.last_end >= QUIET_SECONDS:
                    self._end_burst()
                    return
                if not self.showing and now - self.started >= LATER_BURST_SECONDS:
                    self._show()
                if self.bar is not None:
                    self.bar.refresh()

    def _stream(self):
        return self.stream or sys.stderr

    def _tty(self):
        return getattr(self._stream(), "isatty", lambda: False)()

    def _show(self):
        """On a terminal, a live tqdm counter while a kernel compiles; elsewhere (a log file, a pipe) the
        message now, and the count and the time when the burst ends."""
        self.showing = self.shown_once = True
        if self._tty():
            self._open_bar()
        else:
            self._stream().write(MESSAGE + "\n")
            self._stream().flush()

    def _open_bar(self):
        if self.bar is not None or self.active == 0 or not self._tty():
            return
        from tqdm import tqdm
        self.bar = tqdm(desc=MESSAGE, file=self._stream(), initial=self.compiled, leave=False,
                        bar_format="{desc} {n} compiled [{elapsed}]")
        self.bar.start_t = self.started_wall  # the burst's time, not this kernel's
        self.bar.refresh()

    def _close_bar(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _end_burst(self):
        self.in_burst = False
        if not self.showing:
            return
        self.showing = False
        self._close_bar()
        seconds = time.monotonic() - self.started
        if self._tty():
            from tqdm import tqdm
            tqdm.write(f"{MESSAGE} {self.compiled} compiled in {seconds:.0f} s", file=self._stream())
        else:
            kernels = "kernel" if self.compiled == 1 else "kernels"
            self._stream().write(f"… {self.compiled} {kernels} compiled in {seconds:.0f} s\n")
            self._stream().flush()

    def close(self):
        with self.lock:
            if self.in_burst:
                self._end_burst()
