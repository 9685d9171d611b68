"""The runner: the process, inside the sandbox, that serves one fal App with fal's own SDK.

Everything here runs in the app's environment, not the platform's: it imports fal, the
standard library and what fal brings (uvicorn, FastAPI), never `tenantserve`. The replica
that starts it (`adapters/fal/supervisor.py`) talks to it over two unix sockets: the
app's HTTP routes on one, the platform's file store (the `control` protocol) on the other.
"""

import signal

# The signal a runner dumps its threads' stacks on (a start that hangs): one of the last
# real-time signals, which apps leave alone, where SIGUSR1 is one an app may handle itself.
STACKS_SIGNAL = int(signal.SIGRTMAX) - 2

# A runner that switches to its owner's user is started with only this (and what finds this
# package): the descriptor of its whole environment, which it reads and starts again with.
ENVIRONMENT_FD_VAR = "TENANTSERVE_ENVIRONMENT_FD"
