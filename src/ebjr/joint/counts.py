"""What a joint model has answered so far: the one set of counts every shell reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["RoutingCounts"]


@dataclass
class RoutingCounts:
    """Rows and calls so far.

    Attributes:
        batches, rows: batches and rows answered.
        student_rows, teacher_rows: rows each model answered.
        teacher_calls: calls made to the teacher.
        fallback_rows: routed rows the student answered because the teacher
            could not (counted in ``student_rows`` too).

    Not locked: the owner serialises the updates.
    """

    batches: int = 0
    rows: int = 0
    student_rows: int = 0
    teacher_rows: int = 0
    teacher_calls: int = 0
    fallback_rows: int = 0

    def answered(self, rows: int, routed: int, *, fell_back: bool = False) -> None:
        """A batch of ``rows`` is answered, ``routed`` of them sent to the teacher (answered
        by the student instead when ``fell_back``)."""
        self.batches += 1
        self.rows += int(rows)
        if fell_back and routed:
            self.fallback_rows += int(routed)
            self.student_rows += int(rows)
        else:
            self.teacher_rows += int(routed)
            self.student_rows += int(rows) - int(routed)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)
