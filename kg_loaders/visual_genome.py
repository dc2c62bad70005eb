"""Scene graphs in the Visual Genome layout (VG 1.2/1.4, and ``kclip synth scene-graphs``).

    kclip load visual-genome PATH --kg vg [-o images_dir=VG_100K] [-o max_images=100]

PATH is a directory holding:

- ``scene_graphs.json`` (required, streamed: real VG's is gigabytes): an array of
  ``{image_id, objects: [{object_id, x, y, w, h, names: [..] (or name), attributes: [..]}],
  relationships: [{relationship_id, predicate, subject_id, object_id}]}``; a relationship's
  ``subject``/``object`` may instead be an object with an ``object_id``;
- the images: option ``images_dir`` (relative to PATH or absolute), else every one of
  ``images/``, ``VG_100K/``, ``VG_100K_2/`` under PATH that exists (at least one must); an
  image is ``<image_id>.jpg`` or ``<image_id>.png`` there, or what ``image_data.json``'s
  ``url`` names (a relative path under PATH, or a URL's last folder and file name);
- ``image_data.json`` (optional): ``[{image_id, width, height, url}]``;
- ``region_descriptions.json`` (optional): ``[{id: image_id, regions: [{region_id, phrase, ..}]}]``.

The JSON files may start with a UTF-8 BOM (dropped). Every image file must resolve (symlinks
followed) inside PATH or inside one of the images folders in use: these count as part of the
dataset even when they are symlinks to elsewhere (``VG_100K -> /mnt/vg/VG_100K`` is the usual
setup), whether found by convention or named by ``images_dir``. A file that leaves them (a ``url``
of ``../../x.jpg`` or ``/etc/x.jpg``, an image that is a symlink pointing out) rejects the scene
graph as "outside the dataset"; its region descriptions then name an unknown image.

Mapping to the canonical records (one scene graph = one image's group of records, entities and
relations first, then its triplets, all in the image's split):

- the image -> image entity ``image:<image_id>`` (the whole file);
- each object -> image entity ``object:<object_id>``: a region of the image, its box ``(x, y, w, h)``
  (a reference: the photo is stored once, the crop made when read; see ``platform/media.py``)
  (clipped to the image, since VG boxes often spill over by a few pixels; a box with nothing
  left is rejected), its text the gloss "<attributes> <first name>";
- names -> text entities ``name:<name>``, attributes -> ``attribute:<attribute>``, both
  lower-cased with blanks collapsed and shared across images;
- triplets (object, "is a", name), (object, "has attribute", attribute), (object, "in image",
  image); each relationship -> (subject object, predicate, object object), the relation named by
  the exact predicate string and its text the predicate lower-cased and trimmed;
- each region description -> text entity ``caption:<region_id>`` with (image, "image of",
  caption) and (caption, "caption of", image), as Knowledge-CLIP turns image-text pairs into
  triplets. Region boxes are ignored: the caption describes the image. Region ids are global in
  VG (like object ids), so unlike ``image-text`` captions these ids need no content hash.

Splits are per image, from a hash of the image id (option ``split_ratios``), so all of an image's
triplets land in one split and re-running gives the same split. Object ids are global in VG.
Attributes from VG's separate ``attributes.json`` are not read; 1.4's ``scene_graphs.json``
carries them in its objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

from PIL import Image
from pydantic import PositiveInt

from kclip.kg_loaders.base import KGLoader, SplitRatioOptions, collapse_blanks, hashed_split
from kclip.kg_loaders.json_stream import iter_json_array
from kclip.platform.errors import InputError
from kclip.platform.records import (CAPTION_OF, IMAGE_OF, IN_IMAGE, Entity, ImageSource, Record, Reject, SourceRef, Split,
                                    Triplet)

DEFAULT_IMAGE_DIRS = ("images", "VG_100K", "VG_100K_2")
IMAGE_EXTENSIONS = (".jpg", ".png")
IS_A, HAS_ATTRIBUTE = "is a", "has attribute"


class VisualGenomeOptions(SplitRatioOptions):
    images_dir: str | None = None
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # unlike the base, split by default
    max_images: PositiveInt | None = None


@dataclass(frozen=True)
class ImageInfo:
    """What ``image_data.json`` says about one image."""

    width: int | None = None
    height: int | None = None
    url: str | None = None


@dataclass
class _Scene:
    """One scene graph being turned into records: its image, split and the objects kept so far."""

    image_id: int
    split: Split
    source: SourceRef
    path: Path
    size: tuple[int, int] | None
    entities: list[Record] = field(default_factory=list)
    triplets: list[Record] = field(default_factory=list)
    objects: set[int] = field(default_factory=set)


def normalise(text: str) -> str:
    """VG's free text as an id and a label: trimmed, lower-cased, inner blanks collapsed."""
    return collapse_blanks(text).lower()


def clip_box(box: tuple[int, int, int, int], size: tuple[int, int] | None) -> tuple[int, int, int, int] | None:
    """The part of ``box`` (x, y, w, h) inside an image of ``size`` (width, height); None if nothing is left."""
    x, y, w, h = box
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = x + w, y + h
    if size is not None:
        x1, y1 = min(x1, size[0]), min(y1, size[1])
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0


def _int_field(element: dict, key: str, where: str) -> int | str:
    """An integer field of a JSON object, or the problem as a string (JSON numbers may be 12.0)."""
    value = element.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{where}{key}: expected a number, got {value!r}"
    if isinstance(value, float) and not value.is_integer():
        return f"{where}{key}: expected a whole number, got {value!r}"
    return int(value)


def _ref_id(value: Any) -> Any:
    # VG 1.0's relationships embed the subject and object; later versions name them by id.
    return value.get("object_id") if isinstance(value, dict) else value


class VisualGenomeLoader(KGLoader):
    format = "visual-genome"
    summary = "scene graphs, Visual Genome layout: scene_graphs.json + images/ (+ region_descriptions.json)"
    Options = VisualGenomeOptions

    @classmethod
    def expects(cls) -> str:
        return ("a directory holding scene_graphs.json and images (images/, VG_100K/ or VG_100K_2/), "
                "optionally image_data.json and region_descriptions.json")

    def input_files(self) -> list[Path]:
        optional = [self.path / "image_data.json", self.path / "region_descriptions.json"]
        return [self._scene_graphs_file()] + [p for p in optional if p.is_file()]

    def image_dirs(self) -> list[Path]:
        return self._find_image_dirs()

    def _records(self) -> Iterator[Record]:
        scene_graphs = self._scene_graphs_file()
        self._image_dirs = self.image_dirs()
        self._image_data = self._read_image_data()
        splits: dict[int, Split] = {}
        for line, element in iter_json_array(scene_graphs, self.count_bytes):
            if self.options.max_images is not None and len(splits) >= self.options.max_images:
                break
            yield from self._scene_graph(SourceRef(str(scene_graphs), line), element, splits)
        regions = self.path / "region_descriptions.json"
        if regions.is_file():
            yield from self._region_descriptions(regions, splits)

    # -- files -------------------------------------------------------------------------------

    def _scene_graphs_file(self) -> Path:
        if not self.path.is_dir():
            raise InputError(self.path, None, f"not a directory; expected {self.expects()}")
        return self.require_file("scene_graphs.json", "scene_graphs.json (a JSON array of scene graphs)")

    def _find_image_dirs(self) -> list[Path]:
        if self.options.images_dir is not None:
            chosen = self.path / self.options.images_dir  # an absolute images_dir replaces PATH
            if not chosen.is_dir():
                raise InputError(chosen, None, "images directory (option images_dir) not found")
            return [chosen]
        found = [self.path / d for d in DEFAULT_IMAGE_DIRS if (self.path / d).is_dir()]
        if not found:
            raise InputError(self.path, None, f"no images directory: expected one of {', '.join(DEFAULT_IMAGE_DIRS)} "
                                              "here, or pass -o images_dir=DIR")
        return found

    def _read_image_data(self) -> dict[int, ImageInfo]:
        """image_data.json, if present; its rows are hints, so bad ones are skipped, not rejected."""
        path = self.path / "image_data.json"
        if not path.is_file():
            return {}
        data: dict[int, ImageInfo] = {}
        for _, element in iter_json_array(path, self.count_bytes):
            key = "image_id" if isinstance(element, dict) and "image_id" in element else "id"  # VG 1.0: id
            if not isinstance(element, dict) or isinstance(_int_field(element, key, ""), str):
                continue
            width, height, url = element.get("width"), element.get("height"), element.get("url")
            sized = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height))
            data[int(element[key])] = ImageInfo(width if sized else None, height if sized else None,
                                                url if isinstance(url, str) and url else None)
        return data

    def image_path(self, image_id: int) -> Path:
        """Where image ``image_id`` is; the first candidate when none exists (ingest reports it)."""
        candidates: list[Path] = []
        url = self._image_data.get(image_id, ImageInfo()).url
        if url is not None:
            parsed = urlparse(url)
            if not parsed.scheme:
                candidates.append(self.path / parsed.path)
            parts = Path(parsed.path).parts
            if len(parts) >= 2:  # ".../VG_100K_2/1.jpg" -> PATH/VG_100K_2/1.jpg
                candidates.append(self.path / parts[-2] / parts[-1])
            candidates += [d / Path(parsed.path).name for d in self._image_dirs]
        candidates += [d / f"{image_id}{ext}" for d in self._image_dirs for ext in IMAGE_EXTENSIONS]
        return next((p for p in candidates if p.is_file()), candidates[0])

    def _image_size(self, image_id: int, path: Path) -> tuple[int, int] | None:
        # The file's header is the truth the media store checks boxes against; image_data.json
        # only stands in when the file cannot be read (the ingest pass then reports the file).
        try:
            with Image.open(path) as img:
                return img.size
        except (OSError, ValueError, Image.DecompressionBombError):  # UnidentifiedImageError is an OSError
            info = self._image_data.get(image_id)
            return (info.width, info.height) if info and info.width and info.height else None

    # -- scene graphs ------------------------------------------------------------------------

    def _scene_graph(self, source: SourceRef, element: Any, splits: dict[int, Split]) -> Iterator[Record]:
        if not isinstance(element, dict):
            yield Reject(source=source, problem=f"expected a scene graph object, got {type(element).__name__}")
            return
        image_id = _int_field(element, "image_id" if "image_id" in element else "id", "")
        if isinstance(image_id, str):
            yield Reject(source=source, problem=f"scene graph without a valid image id: {image_id}")
            return
        for key in ("objects", "relationships"):
            if not isinstance(element.get(key, []), list):
                yield Reject(source=source, problem=f"image {image_id}: {key} must be a list")
                return
        path = self.dataset_file(self.image_path(image_id), source, what=f"image {image_id}: file")
        splits[image_id] = hashed_split(str(image_id), self.options.split_ratios)
        if isinstance(path, Reject):
            yield path
            return
        scene = _Scene(image_id, splits[image_id], source, path, self._image_size(image_id, path))
        image = self.make(Entity, source, id=f"image:{image_id}", modality="image", image=ImageSource(path=path))
        (scene.entities if isinstance(image, Entity) else scene.triplets).append(image)
        for n, obj in enumerate(element.get("objects", [])):
            self._object(scene, obj, f"image {image_id}: objects[{n}]: ")
        for n, rel in enumerate(element.get("relationships", [])):
            self._relationship(scene, rel, f"image {image_id}: relationships[{n}]: ")
        yield from scene.entities
        yield from scene.triplets  # Rejects ride along here, after the entities

    def _object(self, scene: _Scene, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            scene.triplets.append(Reject(source=scene.source, problem=f"{where}expected an object, got {obj!r}"))
            return
        fields = [_int_field(obj, key, where) for key in ("object_id", "x", "y", "w", "h")]
        problem = next((f for f in fields if isinstance(f, str)), None)
        names, attributes = self._labels(obj, "names", "name"), self._labels(obj, "attributes", "attribute")
        if problem is None and (names is None or attributes is None):
            problem = f"{where}names and attributes must be strings or lists of strings"
        if problem is None:
            object_id, box = fields[0], clip_box(tuple(fields[1:]), scene.size)
            if box is None:
                size = f" in the {scene.size[0]}x{scene.size[1]} image" if scene.size else ""
                problem = f"{where}object {object_id}: degenerate box {tuple(fields[1:])} (x, y, w, h){size}"
        if problem is not None:
            scene.triplets.append(Reject(source=scene.source, problem=problem))
            return
        self._object_records(scene, object_id, box, names, attributes)

    def _object_records(self, scene: _Scene, object_id: int, box: tuple[int, int, int, int],
                        names: list[str], attributes: list[str]) -> None:
        node = f"object:{object_id}"
        gloss = " ".join(attributes + names[:1]) or None
        entity = self.make(Entity, scene.source, id=node, modality="image", text=gloss,
                           image=ImageSource(path=scene.path, box=box))
        if isinstance(entity, Reject):
            scene.triplets.append(entity)
            return
        scene.entities.append(entity)
        scene.objects.add(object_id)
        self._triplet(scene, node, IN_IMAGE, f"image:{scene.image_id}")
        for prefix, relation, labels in (("name", IS_A, names), ("attribute", HAS_ATTRIBUTE, attributes)):
            for label in labels:
                self._text_entity(scene, f"{prefix}:{label}", label)
                self._triplet(scene, node, relation, f"{prefix}:{label}")

    def _labels(self, obj: dict, plural: str, singular: str) -> list[str] | None:
        """Normalised, de-duplicated labels from ``names: [..]`` or ``name: ".."``; None if malformed."""
        value = obj.get(plural, obj.get(singular, []))
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return None
        return list(dict.fromkeys(n for n in map(normalise, values) if n))

    def _relationship(self, scene: _Scene, rel: Any, where: str) -> None:
        if not isinstance(rel, dict):
            scene.triplets.append(Reject(source=scene.source, problem=f"{where}expected an object, got {rel!r}"))
            return
        predicate = rel.get("predicate")
        ends = [_ref_id(rel.get(f"{end}_id", rel.get(end))) for end in ("subject", "object")]
        problem = None
        if not isinstance(predicate, str) or not normalise(predicate):
            problem = f"{where}predicate must be a non-empty string, got {predicate!r}"
        for end, object_id in zip(("subject", "object"), ends):
            if problem is None and object_id not in scene.objects:
                problem = f"{where}{end} {object_id!r} is not an object of image {scene.image_id}"
        if problem is not None:
            scene.triplets.append(Reject(source=scene.source, problem=problem))
            return
        self._triplet(scene, f"object:{ends[0]}", predicate, f"object:{ends[1]}")

    def _text_entity(self, scene: _Scene, entity_id: str, text: str) -> None:
        # Names and attributes are shared: define each once.
        scene.entities.extend(self.entity_once(scene.source, entity_id, modality="text", text=text))

    def _triplet(self, scene: _Scene, head: str, relation: str, tail: str) -> None:
        if relation not in self.relations_used:  # its text never changes: only a first use yields
            scene.entities.extend(self.first_use(relation, scene.source, normalise(relation)))
        scene.triplets.append(self.make(Triplet, scene.source, head=head, relation=relation, tail=tail,
                                        split=scene.split))

    # -- region descriptions -----------------------------------------------------------------

    def _region_descriptions(self, path: Path, splits: dict[int, Split]) -> Iterator[Record]:
        pending = set(splits)  # with max_images, stop once every loaded image had its regions
        for line, element in iter_json_array(path, self.count_bytes):
            if self.options.max_images is not None and not pending:
                return
            source = SourceRef(str(path), line)
            if not isinstance(element, dict) or isinstance(_int_field(element, "id", ""), str):
                yield Reject(source=source, problem="expected {id: image_id, regions: [..]}")
                continue
            image_id = int(element["id"])
            pending.discard(image_id)
            if image_id not in splits:
                if self.options.max_images is None:
                    yield Reject(source=source, problem=f"image {image_id} has no scene graph in scene_graphs.json")
                continue
            yield from self._captions(source, image_id, element.get("regions"), splits[image_id])

    def _captions(self, source: SourceRef, image_id: int, regions: Any, split: Split) -> Iterator[Record]:
        if not isinstance(regions, list):
            yield Reject(source=source, problem=f"image {image_id}: regions must be a list")
            return
        image = f"image:{image_id}"
        triplets: list[Record] = []
        for n, region in enumerate(regions):
            where = f"image {image_id}: regions[{n}]: "
            region_id = _int_field(region, "region_id", where) if isinstance(region, dict) else f"{where}not an object"
            phrase = region.get("phrase") if isinstance(region, dict) else None
            if isinstance(region_id, str) or not isinstance(phrase, str) or not phrase.strip():
                problem = region_id if isinstance(region_id, str) else f"{where}phrase must be non-empty text"
                triplets.append(Reject(source=source, problem=problem))
                continue
            caption = f"caption:{region_id}"
            entity = self.make(Entity, source, id=caption, modality="text", text=collapse_blanks(phrase))
            yield entity
            if isinstance(entity, Entity):
                yield from self.first_use(IMAGE_OF, source)
                yield from self.first_use(CAPTION_OF, source)
                triplets.append(self.make(Triplet, source, head=image, relation=IMAGE_OF, tail=caption, split=split))
                triplets.append(self.make(Triplet, source, head=caption, relation=CAPTION_OF, tail=image, split=split))
        yield from triplets
