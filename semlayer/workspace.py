"""An annotation workspace: a dataset, per-scene undo/redo and autosaved edits (no UI; the app drives it).

Every edit is saved atomically at once, so a crash, a restart or a page reload loses nothing. Layout of a
dataset's workspace folder (``<workspace>/<stem>-<sha8>/`` for a file, ``<workspace>/uploads/`` for uploads)::

    session.json        revision, source file and its sha256, image folder, current scene index
    scenes/00012.json   one per edited scene: its state (`formats.records`), undo and redo stacks
    images/             images of scenes added in the app (uploads)
    exports/            exported JSON files

Each save carries a revision number. Conflicts are per image: a save of an image whose file another tab or
process saved since this session read it gets a `ConflictError` instead of overwriting that work, while
annotators on different images never collide. A save that fails (a full disk) raises `SaveError` and keeps
the edit in memory; the next save writes it. Workspace files are checked when read: a broken one is set
aside (renamed ``*.broken-N``) and reported, never silently dropped.
"""

from __future__ import annotations

import copy
import fcntl
import functools
import hashlib
import logging
import os
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from semlayer.boxes import mask_box
from semlayer.errors import ConfigError, FormatError, SemlayerError
from semlayer.formats.api import WRITERS, parse_json
from semlayer.formats.cocoa import merge_into
from semlayer.formats.compact import SceneSequence
from semlayer.formats.indexed import load_indexed
from semlayer.formats.records import RleCache, check_state, scene_from_state, scene_state
from semlayer.formats.stream import materialize, write_json
from semlayer.images import image_file
from semlayer.io_utils import atomic_write_bytes, atomic_write_json
from semlayer.scene import MOVES, AmodalScene, AnnotationSet, Instance

log = logging.getLogger(__name__)

SESSION_FILE = "session.json"
SESSION_FORMAT = "semlayer-app-session"
SESSION_VERSION = 1
EXPORT_FORMATS = ("cocoa", "coco", "kins")
# File scenes kept decoded (the current one, its neighbours, the ones an export or undo just used).
DECODED_SCENES = 8
# Editable copies kept of the most recently used file scenes; the others are rebuilt from the file's scene and
# the saved edit state when they are used again, so browsing a large file does not hold a copy per scene seen.
LIVE_SCENES = 8


class ConflictError(SemlayerError):
    """The image was saved by another tab or process since this session last read it."""


class SaveError(SemlayerError):
    """Writing the workspace failed (e.g. the disk is full); the edit is kept in memory for the next save."""


class SourceChangedError(SemlayerError):
    """The annotation file changed on disk since the session opened it: edits cannot be merged into it."""


# ----- undo/redo: patches between scene states (`formats.records`) -----------------------------------


def diff_states(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Patch that turns ``new`` back into ``old``: the full id/rank lists plus the changed instances."""
    changed = {k: v for k, v in old["instances"].items() if new["instances"].get(k) != v}
    return {"ids": old["ids"], "ranks": old["ranks"], "instances": changed}


def apply_patch(state: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    instances = {str(i): patch["instances"].get(str(i)) or state["instances"][str(i)] for i in patch["ids"]}
    return {"ids": list(patch["ids"]), "ranks": list(patch["ranks"]), "instances": instances}


# ----- edit operations: functions of a scene, in place, exact ------------------------------------------


def _instance(scene: AmodalScene, instance_id: int) -> Instance:
    try:
        return scene.get(int(instance_id))
    except KeyError:
        ids = [inst.id for inst in scene.instances]
        raise ValueError(f"scene {scene.image_id} has no instance {instance_id} (ids: {ids})") from None


def _mask(scene: AmodalScene, mask: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.shape != scene.shape:
        raise ValueError(f"{what}: expected a {scene.height}x{scene.width} mask, got shape {arr.shape}")
    arr = arr.astype(bool)
    if not arr.any():
        raise ValueError(f"{what}: the mask is empty; paint at least one pixel")
    return arr


def op_move(scene: AmodalScene, instance_id: int, where: str) -> None:
    if where not in MOVES:
        raise ValueError(f"move must be one of {', '.join(MOVES)}, got {where!r}")
    scene.move(_instance(scene, instance_id).id, where)


def op_put_in_front(scene: AmodalScene, front_id: int, behind_id: int) -> None:
    a, b = _instance(scene, front_id), _instance(scene, behind_id)
    scene.put_in_front(a.id, b.id)


def op_set_order(scene: AmodalScene, front_to_back_ids: Sequence[int]) -> None:
    """Give the instances the depth order ``front_to_back_ids`` (every id once, front-most first)."""
    try:
        ids = [int(i) for i in front_to_back_ids]
    except (TypeError, ValueError):
        raise ValueError(f"an order is a list of instance ids, got {front_to_back_ids!r}") from None
    scene.set_order(ids)


def op_set_amodal(scene: AmodalScene, instance_id: int, mask: np.ndarray) -> None:
    inst = _instance(scene, instance_id)
    new = _mask(scene, mask, f"instance {inst.id} amodal mask")
    x0, y0, x1, y1 = box = mask_box(new)
    # An unchanged mask keeps its source polygon: no edit. Compared in the boxes, without a second frame.
    if box != inst.box or not np.array_equal(new[y0:y1, x0:x1], inst.amodal_crop):
        inst.set_amodal(new)


def op_add_instance(
    scene: AmodalScene, mask: np.ndarray, name: str, category: int | None = None, is_stuff: bool = False
) -> int:
    """Add an instance at the front (the user just painted it over the others); returns its id."""
    inst = Instance(
        id=scene.next_instance_id(),
        amodal=_mask(scene, mask, "new instance mask"),
        name=str(name).strip(),
        category=category,
        is_stuff=bool(is_stuff),
    )
    scene.add(inst, rank=1)
    return inst.id


def op_delete_instance(scene: AmodalScene, instance_id: int) -> None:
    scene.remove(_instance(scene, instance_id).id)


def op_rename(scene: AmodalScene, instance_id: int, name: str) -> None:
    _instance(scene, instance_id).name = str(name)


def op_set_category(scene: AmodalScene, instance_id: int, category: int | None) -> None:
    _instance(scene, instance_id).category = None if category is None else int(category)


def op_set_stuff(scene: AmodalScene, instance_id: int, is_stuff: bool) -> None:
    _instance(scene, instance_id).is_stuff = bool(is_stuff)


def editable_copy(scene: AmodalScene) -> AmodalScene:
    """A copy of ``scene`` to edit that shares its mask crops: every edit replaces a crop (`Instance.set_amodal`,
    the painter's rule), none writes into one, so a mask is held once, not once per copy."""
    shared = {id(a): a for inst in scene.instances for a in (inst.amodal_crop, inst.external_crop) if a is not None}
    return copy.deepcopy(scene, shared)


# ----- the session -------------------------------------------------------------------------------------


@dataclass
class _SceneSlot:
    """One scene of the session: its live scene and history, and the base (file) version of an added scene
    (a file's scenes stay compact in the session's `AnnotationSet`, decoded on use: `EditSession._base`)."""

    base: AmodalScene | None = None
    added: bool = False
    live: AmodalScene | None = None
    state: dict[str, Any] | None = None
    base_state: dict[str, Any] | None = None
    undo: list[dict[str, Any]] | None = None
    redo: list[dict[str, Any]] | None = None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=4)
def _load_annset(path: str, sha256: str) -> AnnotationSet:
    """Parse an annotation file once per content: tabs share it (sessions never mutate base scenes). Index
    first: the app shows the first image of a large file at once, and decodes a scene when it is shown."""
    return load_indexed(path)


def _int(value: Any, file: str = "", path: str = "") -> int:
    """An integer field of a workspace file (bool is not one)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise FormatError(file, path, f"an integer, got {type(value).__name__}")
    return value


def _identity(path: Path) -> tuple | None:
    """What changes whenever a file is replaced or rewritten (files here are only ever replaced by rename)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _relative(text: str, root: Path) -> str:
    """``text`` with the absolute ``root`` prefix of paths removed (messages a client sees)."""
    return text.replace(str(root) + os.sep, "")


def check_scene_record(rec: dict[str, Any], file: str, shape: tuple[int, int] | None, added: bool) -> None:
    """A saved scene file (``scenes/NNNNN.json``) has the shape this module writes, with masks of the image's
    size, so a damaged or foreign file is refused when read rather than failing later in the page."""
    if added:
        image = rec.get("image")
        if not (
            isinstance(image, dict) and all(isinstance(image.get(k), int) and image[k] > 0 for k in ("height", "width"))
        ):
            raise FormatError(file, "image", "an image record with integer height and width")
        if not isinstance(rec.get("annotation"), dict):
            raise FormatError(file, "annotation", "an object")
        shape = (image["height"], image["width"])
        check_state(rec.get("base"), file, "base", shape)
    check_state(rec.get("state"), file, "state", shape)
    _int(rec.get("revision", 0), file, "revision")
    for stack in ("undo", "redo"):
        entries = rec.get(stack)
        if not isinstance(entries, list):
            raise FormatError(file, stack, "a list of edits")
        for n, entry in enumerate(entries):
            where = f"{stack}[{n}]"
            if not (isinstance(entry, dict) and isinstance(entry.get("label"), str)):
                raise FormatError(file, where, "an edit with a label, before and after")
            for side in ("before", "after"):
                check_state(entry.get(side), file, f"{where}.{side}", shape, patch=True)


def earlier_versions(folder: Path, source: Path) -> list[str]:
    """Notices naming the workspace folders that hold edits of other versions of ``source`` (same file name,
    other content): after the file changed on disk, its earlier edits are there, not lost."""
    stem = source.stem
    notices = []
    for other in sorted(folder.parent.glob(f"{stem}-*")):
        if other == folder or not (other / "scenes").is_dir() or not other.name[len(stem) + 1 :].isalnum():
            continue
        if not any((other / "scenes").glob("*.json")):
            continue
        notices.append(
            f"{source.name} has changed since it was last edited here: the edits of its earlier version are in "
            f"the workspace folder {other.name} (not applied to this version; export them from that version of "
            "the file, or redo them here)"
        )
    return notices


class _CorrectedScenes(SceneSequence):
    """The session's scenes as exported: edited ones live, the others as the file has them."""

    def __init__(self, session: EditSession, edited: set[int]):
        self._session, self._edited = session, edited

    def __len__(self) -> int:
        return len(self._session)

    def _scene_at(self, index: int) -> AmodalScene:
        return self._session.scene_at(index) if index in self._edited else self._session._base(index)


class EditSession:
    """A dataset being edited: scenes, the current scene, per-scene undo/redo, autosave to a workspace.

    Use `EditSession.open` (annotation file) or `EditSession.open_uploads` (images added in the app).
    """

    def __init__(
        self,
        folder: Path,
        annset: AnnotationSet,
        image_dir: Path | None,
        source: Path | None = None,
        source_sha256: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.annset = annset
        self.image_dir = None if image_dir is None else Path(image_dir)
        self.source = None if source is None else Path(source)
        self.source_sha256 = source_sha256
        self.revision = 0  # the highest revision this session read or wrote
        self.current = 0
        # What the page should be told about the workspace (files set aside, edits of an earlier version).
        self.notices: list[str] = []
        self._slots = [_SceneSlot() for _ in range(len(annset.scenes))]
        self._decoded: OrderedDict[int, AmodalScene] = OrderedDict()  # recently used file scenes
        self._live: OrderedDict[int, None] = OrderedDict()  # slots holding a live scene, least recent first
        self._caches: dict[int, RleCache] = {}
        self._scene_revs: dict[int, int] = {}  # revision of each scene file as this session last read/wrote it
        self._scene_stats: dict[int, tuple | None] = {}  # and that file's identity then: unchanged means not re-read
        self._unsaved: set[int] = set()  # scenes whose last save failed: written by the next save
        self.changes = 0  # edits made in memory, saved or not (figures depend on it, see app.handlers)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._load_workspace()

    # ----- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, workspace: str | os.PathLike, data: str | os.PathLike, images: str | os.PathLike) -> EditSession:
        """Open an annotation file (any format `semlayer.formats` reads); resumes saved edits."""
        source = Path(data).resolve()
        if not source.is_file():
            raise ConfigError(f"annotation file {source} does not exist")
        image_dir = Path(images).resolve()
        if not image_dir.is_dir():
            raise ConfigError(f"image folder {image_dir} does not exist")
        sha = file_sha256(source)
        annset = _load_annset(str(source), sha)
        folder = Path(workspace).resolve() / f"{source.stem}-{sha[:8]}"
        session = cls(folder, annset, image_dir, source=source, source_sha256=sha)
        session.notices += earlier_versions(folder, source)
        return session

    @classmethod
    def open_uploads(cls, workspace: str | os.PathLike) -> EditSession:
        """The session of images added in the app (no source file); resumes saved edits."""
        return cls(Path(workspace).resolve() / "uploads", AnnotationSet(format="cocoa"), None)

    def _load_workspace(self) -> None:
        meta = self._read_meta()
        if meta is None:
            return
        where = self.folder / SESSION_FILE
        if meta.get("source_sha256") != self.source_sha256:
            raise ConfigError(
                f"workspace {self.folder.name} holds edits of a different version of {self._source_name()}; "
                "move that folder away or choose another --workspace"
            )
        self.revision = _int(meta.get("revision", 0))
        self._load_added(meta, where)
        latest = self.revision
        for key in range(len(self._slots)):
            if key not in self._scene_revs and self._scene_path(key).exists():
                rec = self._read_scene_file(key)
                if rec is not None:
                    slot = self._slots[key]
                    slot.state, slot.undo, slot.redo = rec["state"], rec["undo"], rec["redo"]
                    self._scene_revs[key] = _int(rec.get("revision", 0))
            latest = max(latest, self._scene_revs.get(key, 0))
        self.current = min(max(_int(meta.get("current", 0)), 0), max(len(self._slots) - 1, 0))
        if latest > self.revision:
            # A save was cut off between its scene file and the session file: the edit is on disk, so
            # finish that save (the session file takes the scene's revision) instead of losing count.
            self.revision = latest
            with self._locked():
                atomic_write_json(self.folder / SESSION_FILE, self._meta())

    def _load_added(self, meta: dict[str, Any], where: Path) -> None:
        """Slots for the added scenes (uploads) the session file lists beyond those this session holds."""
        added = meta.get("added", [])
        for n, key in enumerate(added if isinstance(added, list) else []):
            if not isinstance(key, int) or key < len(self._slots):
                continue
            if key != len(self._slots):
                raise FormatError(str(where), f"added[{n}]", f"scene index {len(self._slots)}")
            rec = self._read_scene_file(key, added=True)
            if rec is None:
                break  # set aside: later added scenes would take its index
            base = scene_from_state(AmodalScene(image=rec["image"], annotation=rec["annotation"]), rec["base"])
            slot = _SceneSlot(base=base, added=True)
            slot.state, slot.undo, slot.redo = rec["state"], rec["undo"], rec["redo"]
            self._slots.append(slot)
            self._scene_revs[key] = _int(rec.get("revision", 0))

    def _source_name(self) -> str:
        return "the uploads" if self.source is None else self.source.name

    def _read_meta(self) -> dict[str, Any] | None:
        path = self.folder / SESSION_FILE
        if not path.exists():
            return None
        try:
            meta = self._read_json(path)
            if meta.get("format") != SESSION_FORMAT:
                raise FormatError(str(path), "format", f"'{SESSION_FORMAT}'")
            _int(meta.get("revision", 0), str(path), "revision")
        except FormatError as err:
            self._set_aside(path, err)
            return None
        return meta

    def _set_aside(self, path: Path, err: Exception) -> None:
        """Rename a broken workspace file out of the way (kept, never deleted) and say so."""
        n = 1
        while path.with_name(f"{path.name}.broken-{n}").exists():
            n += 1
        aside = path.with_name(f"{path.name}.broken-{n}")
        os.replace(path, aside)
        rel = aside.relative_to(self.folder.parent)
        message = f"workspace file {rel} was set aside: {_relative(str(err), self.folder.parent)}"
        log.warning(message)
        self.notices.append(message)

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any]:
        try:
            obj = parse_json(path.read_bytes())
        except (OSError, ValueError) as err:
            raise FormatError(str(path), "", f"a readable JSON file ({err})") from None
        if not isinstance(obj, dict):
            raise FormatError(str(path), "", "a JSON object")
        return obj

    def _scene_path(self, index: int) -> Path:
        return self.folder / "scenes" / f"{index:05d}.json"

    def _read_scene_file(self, index: int, added: bool = False) -> dict[str, Any] | None:
        """The saved record of a scene, checked; None when it was broken (and has been set aside)."""
        path = self._scene_path(index)
        try:
            rec = self._read_json(path)
            shape = None if added else self._base(index).shape
            check_scene_record(rec, str(path), shape, added)
        except FormatError as err:
            self._set_aside(path, err)
            return None
        return rec

    def reload(self) -> None:
        """Read the current scene again from the workspace (after a conflict), staying on it; scenes others
        added meanwhile appear. Unsaved edits of other scenes are kept."""
        index = self.current
        with self._locked():
            meta = self._read_meta()
            if meta is not None:
                self._load_added(meta, self.folder / SESSION_FILE)
                self.revision = max(self.revision, _int(meta.get("revision", 0)))
            slot = self._slots[index]
            slot.state = slot.undo = slot.redo = slot.live = None
            self._caches.pop(index, None)
            self._unsaved.discard(index)
            self._scene_revs.pop(index, None)
            self._scene_stats.pop(index, None)
            if self._scene_path(index).exists():
                rec = self._read_scene_file(index, added=slot.added)
                if rec is not None:
                    slot.state, slot.undo, slot.redo = rec["state"], rec["undo"], rec["redo"]
                    self._scene_revs[index] = _int(rec.get("revision", 0))
                    self.revision = max(self.revision, self._scene_revs[index])
        self.changes += 1

    # ----- saving ------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.folder / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _meta(self) -> dict[str, Any]:
        return {
            "format": SESSION_FORMAT,
            "version": SESSION_VERSION,
            # Relative to the workspace's parent: no absolute server path in what a client could be shown.
            "source": None if self.source is None else self.source.name,
            "source_sha256": self.source_sha256,
            "revision": self.revision,
            "current": self.current,
            "added": [i for i, s in enumerate(self._slots) if s.added],
        }

    def _check_revision(self, index: int) -> None:
        """Refuse to save over a scene file another tab or process wrote since this session read it."""
        path = self._scene_path(index)
        saved = 0
        mine = self._scene_revs.get(index, 0)
        if path.exists():
            if _identity(path) == self._scene_stats.get(index):
                saved = mine  # the very file this session read or wrote (a rename gives a new inode)
            else:
                try:
                    saved = _int(self._read_json(path).get("revision", 0))
                except FormatError:
                    saved = -1  # broken on disk meanwhile: not what this session read either
        if saved != mine:
            raise ConflictError(
                f"image {index + 1} ({self._base(index).file_name or 'no file'}) was saved by another tab or "
                f"process (revision {saved}, this page has revision {mine}); your last change was not saved. "
                "The page now shows the saved state."
            )

    def _save_scene(self, index: int) -> None:
        """Write one scene's file (and any whose save failed before), if nobody else saved it meanwhile."""
        with self._locked():
            self._save_scene_locked(index)

    def _save_scene_locked(self, index: int) -> None:
        self._check_revision(index)
        meta = self._read_meta()
        for key in sorted(self._unsaved | {index}):
            if key != index:
                try:
                    self._check_revision(key)
                except ConflictError:
                    continue  # saved elsewhere meanwhile: its own next save reports that
            slot = self._slots[key]
            rec: dict[str, Any] = {"state": slot.state, "undo": slot.undo or [], "redo": slot.redo or []}
            if slot.added:
                base = self._base(key)
                rec.update(image=base.image, annotation=base.annotation, base=self._base_state(key))
            # The revision moves only once the file is written: a failed write leaves nothing half-counted.
            new = max(self.revision, 0 if meta is None else _int(meta.get("revision", 0))) + 1
            rec["revision"] = new
            try:
                atomic_write_json(self._scene_path(key), rec)
            except OSError as err:
                self._unsaved.add(key)
                raise SaveError(
                    f"could not save image {key + 1} to the workspace ({err.strerror or err}); the change is "
                    "kept in this page and is saved with your next edit"
                ) from None
            self.revision = self._scene_revs[key] = new
            self._scene_stats[key] = _identity(self._scene_path(key))
            self._unsaved.discard(key)
        try:
            atomic_write_json(self.folder / SESSION_FILE, self._meta())
        except OSError as err:
            # The scene files are on disk (reopening finishes the count); only the list of uploads needs this.
            if any(self._slots[k].added for k in range(len(self._slots))):
                self._unsaved.add(index)
            raise SaveError(
                f"could not save the session file ({err.strerror or err}); saved with your next edit"
            ) from None

    def _save_position(self) -> None:
        """Remember the current scene; not an edit, so it never conflicts and keeps the revision."""
        try:
            with self._locked():
                meta = self._read_meta() or self._meta()
                meta["current"] = self.current
                atomic_write_json(self.folder / SESSION_FILE, meta)
        except OSError as err:  # only the position is lost; the next start opens another image
            log.warning("could not save the current image: %s", err)

    # ----- scenes ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slots)

    @property
    def scene(self) -> AmodalScene:
        """The live scene at the current index (edits apply to it)."""
        return self.scene_at(self.current)

    def scene_at(self, index: int) -> AmodalScene:
        slot = self._slot(index)
        if slot.live is None:
            # Base scenes may be shared (cached loads), so edits always work on a private copy.
            base = self._base(index)
            slot.live = editable_copy(base) if slot.state is None else scene_from_state(base, slot.state)
        self._live.pop(index, None)
        self._live[index] = None
        while len(self._live) > LIVE_SCENES:
            old = self._live.popitem(last=False)[0]
            # Every edit is in the slot's state already. Added scenes (uploads) keep theirs: they are few,
            # and they carry the network's dense maps, which the state does not hold.
            if not self._slots[old].added:
                self._slots[old].live = None
                self._caches.pop(old, None)  # it holds the masks it encoded
        return slot.live

    def _base(self, index: int) -> AmodalScene:
        """The scene as the file has it (an added scene: as it was added). Do not modify it."""
        slot = self._slots[index]
        if slot.base is not None:
            return slot.base
        scene = self._decoded.pop(index, None)
        if scene is None:
            scene = self.annset.scenes[index]
        self._decoded[index] = scene  # most recently used last
        while len(self._decoded) > DECODED_SCENES:
            self._decoded.popitem(last=False)
        return scene

    def _slot(self, index: int) -> _SceneSlot:
        if not self._slots:
            raise ValueError("this dataset has no scenes")
        if not 0 <= index < len(self._slots):
            raise ValueError(f"scene index {index} is outside 0..{len(self._slots) - 1}")
        return self._slots[index]

    def go_to(self, index: int) -> AmodalScene:
        self._slot(index)
        if index != self.current:
            self.current = index
            self._save_position()
        return self.scene

    def index_of_image(self, image_id: int) -> int:
        """The index of the scene of image ``image_id`` (ValueError when the dataset has none)."""
        images = getattr(self.annset.scenes, "images", None)  # ids known without decoding the scenes
        for index, slot in enumerate(self._slots):
            known = self._base(index).image_id if slot.added or images is None else images[index].get("id")
            if known is not None and int(known) == int(image_id):
                return index
        raise ValueError(f"this dataset has no image with id {image_id}")

    def image_path(self, index: int | None = None) -> Path:
        index = self.current if index is None else index
        slot = self._slot(index)
        folder = self.folder / "images" if slot.added else self.image_dir
        if folder is None:
            raise ValueError(f"scene {index} has no image folder")
        images = getattr(self.annset.scenes, "images", None)  # file names known without decoding the scene
        name = self._base(index).file_name if slot.added or images is None else str(images[index].get("file_name", ""))
        return image_file(folder, name)  # refuses names that leave the folder

    def add_scene(self, scene: AmodalScene, image_png: bytes) -> int:
        """Append a scene (e.g. a prediction on an uploaded image) with its PNG bytes; returns its index.

        Under the workspace lock, after taking in the scenes other tabs added meanwhile: the new scene's index,
        id and image name (``upload_NNNNN.png``) are free, so no tab's upload overwrites another's image."""
        with self._locked():
            meta = self._read_meta()
            if meta is not None:
                self._load_added(meta, self.folder / SESSION_FILE)
            index = len(self._slots)
            for orphan in (self._scene_path(index), self.folder / "images" / f"upload_{index + 1:05d}.png"):
                if orphan.exists():  # left by a save cut off before the session file listed it: kept, renamed
                    self._set_aside(orphan, FormatError(str(orphan), "", "a scene the session file lists"))
            record = {"id": index + 1, "file_name": f"upload_{index + 1:05d}.png"}
            scene.image = {**scene.image, **record}
            base = scene.copy()
            for inst in base.instances:
                inst.semdist = None
            image_path = self.folder / "images" / str(record["file_name"])
            try:
                atomic_write_bytes(image_path, image_png)
            except OSError as err:
                raise SaveError(
                    f"could not save the uploaded image ({err.strerror or err}); nothing was added"
                ) from None
            slot = _SceneSlot(base=base, added=True, live=scene)
            self._slots.append(slot)
            slot.state = self._state(index)
            slot.undo, slot.redo = [], []
            try:
                self._save_scene_locked(index)
            except SemlayerError:
                self._slots.pop()
                self._unsaved.discard(index)
                self._scene_revs.pop(index, None)
                self._scene_stats.pop(index, None)
                image_path.unlink(missing_ok=True)
                raise
        self.current = index
        self._save_position()
        return index

    # ----- edits -------------------------------------------------------------------------------
    def _state(self, index: int) -> dict[str, Any]:
        cache = self._caches.setdefault(index, RleCache())
        return scene_state(self.scene_at(index), cache)

    def _base_state(self, index: int) -> dict[str, Any]:
        slot = self._slots[index]
        if slot.base_state is None:
            slot.base_state = scene_state(self._base(index))
        return slot.base_state

    def _current_state(self, index: int) -> dict[str, Any]:
        slot = self._slots[index]
        if slot.state is None:
            slot.state = self._state(index)
        return slot.state

    def apply(self, label: str, op: Callable[..., Any], *args: Any) -> Any:
        """Run ``op(scene, *args)`` on the current scene as one undoable, autosaved edit.

        A bad argument (ValueError) or a conflict leaves the scene exactly as it was.
        """
        index = self.current
        slot = self._slots[index]
        before = self._current_state(index)
        scene = self.scene_at(index)
        try:
            result = op(scene, *args)
            after = self._state(index)
        except ValueError:
            slot.live = scene_from_state(self._base(index), before)
            raise
        if after == before:
            return result
        if (
            after["ids"] != before["ids"]
            or after["ranks"] != before["ranks"]
            or any(before["instances"].get(k, {}).get("amodal") != v["amodal"] for k, v in after["instances"].items())
        ):
            # Dense predictions describe the old masks and order; views fall back to the encoded maps.
            for inst in scene.instances:
                inst.semdist = None
        entry = {"label": label, "before": diff_states(before, after), "after": diff_states(after, before)}
        old = (slot.state, slot.undo, slot.redo)
        slot.state, slot.undo, slot.redo = after, [*(slot.undo or []), entry], []
        self.changes += 1
        try:
            self._save_scene(index)
        except ConflictError:
            slot.state, slot.undo, slot.redo = old
            slot.live = scene_from_state(self._base(index), before)
            raise
        # A SaveError goes up with the edit kept (in memory, and in the set the next save writes).
        return result

    def _step(self, source: str, target: str, patch_key: str) -> str | None:
        index = self.current
        slot = self._slots[index]
        stack = getattr(slot, source) or []
        if not stack:
            return None
        entry = stack[-1]
        old = (slot.state, slot.undo, slot.redo, slot.live)
        new_state = apply_patch(self._current_state(index), entry[patch_key])
        setattr(slot, source, stack[:-1])
        setattr(slot, target, [*(getattr(slot, target) or []), entry])
        slot.state = new_state
        slot.live = scene_from_state(self._base(index), new_state)
        self.changes += 1
        try:
            self._save_scene(index)
        except ConflictError:
            slot.state, slot.undo, slot.redo, slot.live = old
            raise
        return entry["label"]

    def undo(self) -> str | None:
        """Undo the last edit of the current scene; returns its label, None when there is nothing to undo."""
        return self._step("undo", "redo", "before")

    def redo(self) -> str | None:
        return self._step("redo", "undo", "after")

    def history(self) -> tuple[list[str], list[str]]:
        """Labels of the undo stack (oldest first) and of the redo stack (next redo last)."""
        slot = self._slot(self.current)
        return [e["label"] for e in slot.undo or []], [e["label"] for e in slot.redo or []]

    def move(self, instance_id: int, where: str) -> None:
        self.apply(f"move {instance_id} {where}", op_move, instance_id, where)

    def put_in_front(self, front_id: int, behind_id: int) -> None:
        self.apply(f"put {front_id} in front of {behind_id}", op_put_in_front, front_id, behind_id)

    def set_order(self, front_to_back_ids: Sequence[int], label: str = "reorder") -> None:
        """The whole depth order at once (front-most first): one edit, whatever moved."""
        self.apply(label, op_set_order, list(front_to_back_ids))

    def set_amodal(self, instance_id: int, mask: np.ndarray) -> None:
        self.apply(f"edit mask of {instance_id}", op_set_amodal, instance_id, mask)

    def add_instance(self, mask: np.ndarray, name: str, category: int | None = None, is_stuff: bool = False) -> int:
        return self.apply(f"add {name!r}", op_add_instance, mask, name, category, is_stuff)

    def delete_instance(self, instance_id: int) -> None:
        self.apply(f"delete {instance_id}", op_delete_instance, instance_id)

    def rename(self, instance_id: int, name: str) -> None:
        self.apply(f"rename {instance_id} to {name!r}", op_rename, instance_id, name)

    def set_category(self, instance_id: int, category: int | None) -> None:
        self.apply(f"set category of {instance_id} to {category}", op_set_category, instance_id, category)

    def set_stuff(self, instance_id: int, is_stuff: bool) -> None:
        self.apply(f"set stuff of {instance_id} to {bool(is_stuff)}", op_set_stuff, instance_id, is_stuff)

    # ----- export ------------------------------------------------------------------------------
    def edited_indices(self) -> list[int]:
        """Scenes whose state differs from the file (added scenes always count)."""
        out = []
        for i, slot in enumerate(self._slots):
            if slot.added or (slot.state is not None and slot.state != self._base_state(i)):
                out.append(i)
        return out

    def corrected(self) -> AnnotationSet:
        """The dataset with every edit applied (unedited scenes are the loaded ones). Its scenes are a lazy
        sequence: writing it decodes one unedited scene at a time, so exporting a whole dataset fits in memory."""
        scenes = _CorrectedScenes(self, set(self.edited_indices()))
        return AnnotationSet(
            scenes=scenes,
            categories=self.annset.categories,
            format=self.annset.format,
            extra=self.annset.extra,
            images=self.annset.images,
        )

    def export_dict(self, fmt: str) -> dict[str, Any]:
        """The corrected dataset as a JSON object.

        ``cocoa``: when the source file is COCOA, its JSON with only the edited scenes' annotation records
        replaced (and added scenes appended), so untouched images and fields stay byte-for-byte equal;
        otherwise the whole corrected dataset converted. ``coco``: COCO-style amodal of the whole dataset.
        ``kins``: KINS 2020 of the whole dataset (clusters and in-cluster ranks from the corrected order).
        """
        return materialize(self._export_document(fmt))

    def _export_document(self, fmt: str) -> dict[str, Any]:
        """`export_dict`'s object as the format's writer describes it (`formats.WRITERS`): its long lists are
        written one record at a time."""
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
        if fmt == "cocoa" and self.source is not None and self.annset.format == "cocoa":
            return merge_into(self._read_source(), [self.scene_at(i) for i in self.edited_indices()])
        return WRITERS[fmt](self.corrected())

    def _read_source(self) -> dict[str, Any]:
        """The source file's JSON, refused unless it is the content the edits were made on (its sha256)."""
        source = self.source
        assert source is not None, "only a session opened on a file has a source"
        try:
            data = source.read_bytes()
        except OSError as err:
            raise SourceChangedError(
                f"{source.name} cannot be read any more ({err.strerror}); restore it to "
                "export COCOA merged into it, or export COCO-style or KINS JSON"
            ) from None
        if hashlib.sha256(data).hexdigest() != self.source_sha256:
            raise SourceChangedError(
                f"{source.name} changed on disk since it was opened, so these edits (of its earlier version) "
                "are not merged into it: restore the earlier file to export COCOA, export COCO-style or KINS JSON "
                f"(the whole corrected dataset), or restart the app to edit the new version (these edits stay in "
                f"the workspace folder {self.folder.name})"
            )
        try:
            obj = parse_json(data)
        except ValueError as err:
            raise FormatError(source.name, "", f"a readable JSON file ({err})") from None
        if not isinstance(obj, dict):
            raise FormatError(source.name, "", "a JSON object")
        return obj

    def export(self, fmt: str) -> Path:
        """Write the corrected dataset to ``exports/`` in the workspace; returns the file."""
        document = self._export_document(fmt)
        stem = self.source.stem if self.source is not None else "uploads"
        path = self.folder / "exports" / f"{stem}.corrected.{fmt}.json"
        write_json(path, document)
        return path
