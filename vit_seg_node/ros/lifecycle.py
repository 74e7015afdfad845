"""``vit_seg_lifecycle_node``: the segmentation node as a managed (lifecycle) node.

The same frame path, parameters and topics as ``vit_seg_node`` (``ros.node.SegmentationCore``),
brought up and down through the standard lifecycle services (``~/change_state``,
``~/get_state``, ``~/get_available_transitions``, ...), the way a navigation stack's lifecycle
manager drives its nodes:

* ``configure``: load every model of the ladder and warm each up (its reference latency is
  timed then), create the publishers (lifecycle publishers, silent until active);
* ``activate``: subscribe the cameras and take frames;
* ``deactivate``: unsubscribe, drop the frames waiting, finish the one in work; the models stay
  loaded, so ``activate`` is immediate;
* ``cleanup``: stop the worker, destroy the publishers, free the backends and their buffers;
* ``shutdown`` (from any state): the same as cleanup, then finalized.

A transition that fails (a model that does not load) logs one line, answers FAILURE and leaves
the node unconfigured with nothing loaded; an unexpected error answers ERROR, frees everything
and returns the node to unconfigured. A transition asked for in a state that has none of that
name is refused with one line (the node keeps serving its services). ``/diagnostics`` is
published in every state and carries ``lifecycle_state``.

    vit_seg_lifecycle_node --ros-args -p model_path:=M.onnx
    ros2 lifecycle set /vit_seg_node configure   # then activate
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

from lifecycle_msgs.srv import ChangeState
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from vit_seg_node.core.errors import UserError
from vit_seg_node.ros.node import SegmentationCore
from vit_seg_node.ros.params import usage_text
from vit_seg_node.ros.spin import run_node

OK = TransitionCallbackReturn.SUCCESS


class LifecycleSegmentationNode(SegmentationCore, LifecycleNode):
    """The managed form of the segmentation node; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('vit_seg_node', **kwargs)
        self._declare_parameters()
        self._guard_change_state()
        self.diag_timer = self.create_timer(1.0, self.publish_diagnostics)
        self.get_logger().info('unconfigured: waiting for configure')

    def lifecycle_state(self) -> Optional[str]:
        """Return the current state's label (unconfigured, inactive, active, ...)."""
        return self._state_machine.current_state[1]

    # ------------------------------------------------------------------ transitions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load and warm up every model, create the publishers."""
        t = time.monotonic()
        try:
            self._load_models()
            self._open_cameras(self.create_lifecycle_publisher)
        except UserError as exc:
            self._release()
            self.get_logger().error(f'configure failed: cannot load model: {exc}')
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:
            self._release()
            self.get_logger().error(f'configure failed: {type(exc).__name__}: {exc}')
            return TransitionCallbackReturn.ERROR
        self.get_logger().info(f'configured in {time.monotonic() - t:.1f} s: '
                               f'{self._ready_line()}')
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe the cameras; the lifecycle publishers start publishing."""
        result = super().on_activate(state)
        self._start_input()
        self.get_logger().info('active: taking frames')
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking frames (the models stay loaded); the publishers go silent."""
        self._stop_input()
        self.get_logger().info('inactive: frames are not taken, models stay loaded')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the backends, buffers, worker and publishers."""
        self._release()
        self.get_logger().info('unconfigured: models freed')
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything, whatever the state was."""
        self._release()
        self.get_logger().info(f'shut down from {state.label}')
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything and go back to unconfigured."""
        self._release()
        self.get_logger().error(f'error while {state.label}: released everything, unconfigured')
        return OK

    def _release(self) -> None:
        """Stop taking frames, stop the worker, destroy the publishers, free the models."""
        self._close_cameras(self.destroy_lifecycle_publisher)
        self._free_models()

    # ------------------------------------------------------------------ wrong-state requests
    def _guard_change_state(self) -> None:
        """Refuse, with one line, a transition the current state does not have.

        rclpy (7.1) hands such a request to rcl, which raises out of the service callback and
        would end the executor's spin, and the node with it.
        """
        service = self._service_change_state
        handle = service.callback

        def change_state(req: ChangeState.Request, resp: ChangeState.Response):
            label, tid = req.transition.label, req.transition.id
            available = self._state_machine.available_transitions
            if not any((label and label == t[1]) or (not label and tid == t[0])
                       for t in available):
                names = sorted({t[1] for t in available})
                self.get_logger().warn(
                    f'transition {label or tid} refused in state {self.lifecycle_state()} '
                    f'(available: {", ".join(names)})')
                resp.success = False
                return resp
            return handle(req, resp)
        service.callback = change_state

    def stop(self) -> None:
        """Release everything (the process is ending)."""
        self._release()


def main(args: Optional[list[str]] = None) -> int:
    """Run the managed node until shutdown; exit code 1 with one fatal line if it cannot start."""
    return run_node(LifecycleSegmentationNode, args,
                    usage_text().replace('vit_seg_node [', 'vit_seg_lifecycle_node [', 1))


if __name__ == '__main__':
    sys.exit(main(sys.argv))
