"""One small class per state type."""
from .choice import ChoiceState
from .fail import FailState
from .map_state import MapState
from .parallel import ParallelState
from .pass_state import PassState
from .succeed import SucceedState
from .task import TaskState
from .wait import WaitState

STATE_TYPES = {
    "Pass": PassState, "Task": TaskState, "Choice": ChoiceState, "Wait": WaitState,
    "Succeed": SucceedState, "Fail": FailState, "Parallel": ParallelState, "Map": MapState,
}

__all__ = ["STATE_TYPES"]
