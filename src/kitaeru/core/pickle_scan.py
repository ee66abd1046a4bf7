"""Read a checkpoint's pickle without running it: which classes it would *call*.

torch's weights-only unpickler lets a caller allow extra classes, but it then calls an allowed class
with whatever arguments the file holds (``REDUCE``), or hands it to ``_rebuild_from_type_v2``, which
calls it too. An allowed ``nn.Module`` class whose constructor reads a file (Ultralytics'
``AutoBackend("stage2.pt")`` loads a second checkpoint with ``weights_only=False``) then runs code.

A module that ``torch.save`` wrote is never called: it is made with ``cls.__new__(cls)``
(``NEWOBJ`` with no arguments) and filled by ``BUILD`` (``nn.Module.__setstate__``). So
:func:`find_class_calls` walks the pickle's opcodes with a symbolic stack and memo, and reports every
place where one of the given classes is called, gets arguments, or is passed (even nested in a
tuple, list or dict) as an argument to any call. Such a file is refused before torch unpickles it.
"""

from __future__ import annotations

import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

_MARK = object()


@dataclass(eq=False)
class _Value:
    """What the scanner knows of one stack item: the class it names (if watched) and what it holds."""

    watched: str | None = None
    children: list["_Value"] = field(default_factory=list)

    def holds_watched(self, _seen: set[int] | None = None) -> str | None:
        """The first watched class inside this value (itself, or nested in a container)."""
        if self.watched:
            return self.watched
        seen = _seen if _seen is not None else set()
        if id(self) in seen:
            return None
        seen.add(id(self))
        for child in self.children:
            found = child.holds_watched(seen)
            if found:
                return found
        return None


def checkpoint_pickle(path: str | Path) -> bytes:
    """The main pickle (``*/data.pkl``) of a zip checkpoint as torch writes it."""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if not names:
            raise ValueError("no data.pkl in the archive")
        return archive.read(min(names, key=len))


def find_class_calls(data: bytes, watched: set[str]) -> list[str]:
    """Each way the pickle ``data`` would call a class named in ``watched`` ("module.Name").

    An empty list means every watched class is only ever instantiated the way ``torch.save`` does it
    (``NEWOBJ`` with no arguments, then ``BUILD``) or kept as a plain value.
    """
    scan = _Scan(watched)
    for opcode, arg, _pos in pickletools.genops(data):
        if opcode.name == "STOP":
            break
        scan.step(opcode, arg)
    return scan.problems


class _Scan:
    """The symbolic stack and memo of one pickle; :meth:`step` follows one opcode."""

    def __init__(self, watched: set[str]):
        self.watched, self.stack, self.memo, self.problems = watched, [], {}, []

    def pop_to_mark(self) -> list:
        items = []
        while self.stack and self.stack[-1] is not _MARK:
            items.append(self.stack.pop())
        if self.stack:
            self.stack.pop()
        return items[::-1]

    def called(self, what: str, func: object, args: object) -> None:
        name = func.holds_watched() if isinstance(func, _Value) else None
        if name:
            self.problems.append(f"{what} calls {name}")
        inner = args.holds_watched() if isinstance(args, _Value) else None
        if inner:
            self.problems.append(f"{what} passes {inner} to a call")

    def named(self, arg: str) -> _Value:
        dotted = arg.replace(" ", ".")
        return _Value(watched=dotted if dotted in self.watched else None)

    def step(self, opcode, arg) -> None:
        name, stack = opcode.name, self.stack
        if name == "GLOBAL":
            stack.append(self.named(arg))
        elif name == "INST":  # INST calls the class with the items above the mark
            self.called(name, self.named(arg), _Value(children=self.pop_to_mark()))
            stack.append(_Value())
        elif name in ("REDUCE", "OBJ"):
            if name == "REDUCE":
                args, func = stack.pop(), stack.pop()
            else:
                items = self.pop_to_mark() or [_Value()]
                func, args = items[0], _Value(children=items[1:])
            self.called(name, func, args)
            stack.append(_Value())
        elif name in ("NEWOBJ", "NEWOBJ_EX"):
            self.new_object(name)
        elif name in ("STACK_GLOBAL", "EXT1", "EXT2", "EXT4"):
            # a class named by strings on the stack or through the extension registry: a symbolic
            # scan cannot tell which, and torch's weights-only unpickler accepts neither
            if name == "STACK_GLOBAL":
                del stack[-2:]  # the module and name strings
            stack.append(_Value())
            self.problems.append(f"{name} names a class indirectly")
        else:
            self.container_step(opcode, arg)

    def new_object(self, name: str) -> None:
        if name == "NEWOBJ_EX":
            self.stack.pop()  # kwargs
        args, cls = self.stack.pop(), self.stack.pop()
        inner = args.holds_watched() if isinstance(args, _Value) else None
        if inner:
            self.problems.append(f"{name} passes {inner} to a constructor")
        if isinstance(cls, _Value) and cls.watched and isinstance(args, _Value) and args.children:
            self.problems.append(f"{name} gives {cls.watched} arguments")
        self.stack.append(_Value())

    def container_step(self, opcode, arg) -> None:
        """Memo, marks and containers: what they hold is followed (a class inside a tuple is found)."""
        name, stack = opcode.name, self.stack
        if name == "BUILD":
            stack.pop()  # the state goes into the instance below it; that instance is never called
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            self.memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(self.memo.get(arg, _Value()))
        elif name == "MARK":
            stack.append(_MARK)
        elif name in ("TUPLE", "LIST", "DICT", "FROZENSET"):
            stack.append(_Value(children=self.pop_to_mark()))
        elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
            _add_children(stack, self.pop_to_mark())
        elif name in ("APPEND", "SETITEM"):
            count = 1 if name == "APPEND" else 2
            items = stack[-count:]
            del stack[-count:]
            _add_children(stack, items)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            items = stack[-count:]
            del stack[-count:]
            stack.append(_Value(children=items))
        else:
            _generic(opcode, stack)


def _add_children(stack: list, items: list) -> None:
    if stack and isinstance(stack[-1], _Value):
        stack[-1].children.extend(items)


def _generic(opcode, stack: list) -> None:
    """Any other opcode: pop what it consumes, push opaque values for what it makes."""
    before = opcode.stack_before
    if pickletools.markobject in before:
        while stack and stack[-1] is not _MARK:
            stack.pop()
        if stack:
            stack.pop()
    else:
        count = len(before)
        if count:
            del stack[-count:]
    for _ in opcode.stack_after:
        stack.append(_MARK if _ is pickletools.markobject else _Value())
