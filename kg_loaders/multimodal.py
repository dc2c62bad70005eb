"""Multimodal KGs in a VisualSem-like layout: nodes with glosses and images, and typed edges.

PATH is a directory::

    PATH/
      nodes.json   the nodes: a JSON object {node id: node, ...} (as VisualSem's nodes.v2.json)
                   or a JSON array [node, ...] whose nodes each carry "id"
      edges.json   a JSON array of edges: [{"head": id, "relation": name, "tail": id}, ...]
      images/      the image files; node image paths are relative to this folder
                   (option ``images_dir`` points elsewhere)

Both files may start with a UTF-8 BOM (dropped).

A node is a JSON object with these fields (others are ignored):

- ``id``: non-empty string. Required in the array form; in the object form the key is the id,
  and an ``id`` field, if present, must equal it.
- ``name``: optional string, the node's name or main sense ("cat").
- ``gloss``: optional string, or ``glosses``: a list of strings of which the first non-empty one
  is used (``gloss`` wins when both are given). A node needs a name or a gloss.
- ``images``: optional list of image paths relative to ``images/`` ("ab/ab12cd.jpg"). Each must
  resolve (symlinks followed) inside PATH or the images folder; ``images/`` (or ``images_dir``)
  may itself be a symlink to elsewhere, but a path that leaves it (``../``, an absolute path
  elsewhere, a symlink pointing out) rejects the node as "outside the dataset".

An edge is a JSON object with ``head``, ``relation`` and ``tail`` (non-empty strings, kept exactly
as written: any Unicode, spaces, ``/film/film/genre``-style paths) and an optional ``split``
(``train``, ``dev``/``valid``/``validation``, ``test``; default ``train``); other fields are ignored.

Mapping: a node is the text entity with the node's id, text ``"<name>: <gloss>"`` (or whichever
of the two it has; runs of blanks and line breaks as one space) and attribute ``name``. Each
image path P is the image entity ``image:P`` (shared by every node listing P) with the triplets
(``image:P``, ``image of``, node) and (node, ``has image``, ``image:P``), in ``train``: ``image
of`` is the relation the trainer reads image-text pairs from (``records.IMAGE_OF``). Each edge is
a triplet between node entities, relation name as given, relation text derived by
``readable_relation``.

Rejected (with the file and the line where the node or edge starts): a node or edge of the wrong
shape, a node defined twice, an edge naming a node not in nodes.json (all nodes are read first, so
the loader can tell), a bad split, a control character other than tab, newline and carriage
return in a name or gloss, an image path outside the dataset. Missing or unreadable image files
are reported by the ingest pass. A file that is not the expected JSON (or is empty) stops the
load with an ``InputError``.

VisualSem itself (https://github.com/iacercalixto/visualsem, v2) ships ``nodes.v2.json``
({BabelNet id: {"ms": ..., "se": ..., "ims": [image id, ...]}}), ``tuples.v2.json``
({tail id: [{"s": head id, "r": relation, "r_id": ...}, ...]}), glosses in
``gloss_files/nodes.glosses.json`` ([{"available_languages": [...]}, {id: {lang: [gloss, ...]}}, ...])
and images at ``images/<id[:2]>/<id>.jpg``. This is what its example code reads; the loader was not
run on the real release. To convert: node key -> ``id``, English glosses -> ``glosses``, ``ms``
-> ``name`` when it is a string, each image id X -> ``"X[:2]/X.jpg"`` in ``images``, and each tuple
under key T -> ``{"head": s, "relation": r, "tail": T}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from kclip.kg_loaders.base import UTF8_BOM, KGLoader, LoaderOptions, collapse_blanks
from kclip.kg_loaders.json_stream import iter_json_array, iter_json_members
from kclip.platform.errors import InputError
from kclip.platform.records import IMAGE_OF, Entity, ImageSource, Record, Reject, SourceRef, Triplet

HAS_IMAGE = "has image"
NODES_FILE = "nodes.json"
EDGES_FILE = "edges.json"

# node id, text, name (or None), image paths
Node = tuple[str, str, str | None, list[str]]


class MultimodalOptions(LoaderOptions):
    images_dir: Path | None = None  # default: PATH/images


class MultimodalLoader(KGLoader):
    format = "multimodal"
    summary = "multimodal KG, VisualSem-style: nodes.json (glosses, images) + edges.json + images/"
    Options = MultimodalOptions

    @classmethod
    def expects(cls) -> str:
        return "a directory holding nodes.json, edges.json and images/"

    def input_files(self) -> list[Path]:
        if not self.path.is_dir():
            raise InputError(self.path, None, f"not a directory; expected {self.expects()}")
        return [self.require_file(NODES_FILE, "nodes.json (a JSON object or array of nodes)"),
                self.require_file(EDGES_FILE, 'edges.json (a JSON array of {"head", "relation", "tail"})')]

    def image_dirs(self) -> list[Path]:
        return [self.options.images_dir or self.path / "images"]

    def reset_pass(self) -> None:
        super().reset_pass()
        self._nodes: dict[str, SourceRef] = {}  # node id -> where it was defined

    def _records(self) -> Iterator[Record]:
        nodes_path, edges_path = self.input_files()
        for source, key, node in self._node_items(nodes_path):
            yield from self._node_records(source, key, node)
        for line, edge in iter_json_array(edges_path, self.count_bytes):
            yield from self._edge_records(SourceRef(str(edges_path), line), edge)

    def _node_items(self, path: Path) -> Iterator[tuple[SourceRef, str | None, Any]]:
        """(source, key, node) per node; key is None in the array form."""
        first = _first_char(path)
        if first == "[":
            for line, node in iter_json_array(path, self.count_bytes):
                yield SourceRef(str(path), line), None, node
        elif first == "{":
            for key, line, node in iter_json_members(path, self.count_bytes):
                yield SourceRef(str(path), line), key, node
        elif first == "":
            raise InputError(path, None, "empty file; expected a JSON object or array of nodes")
        else:
            raise InputError(path, 1, f"expected a JSON object or array of nodes, found {first!r}")

    def _node_records(self, source: SourceRef, key: str | None, raw: Any) -> Iterator[Record]:
        node = _parse_node(key, raw)
        if isinstance(node, str):
            yield Reject(source=source, problem=node)
            return
        node_id, text, name, images = node
        if node_id in self._nodes:
            yield Reject(source=source, problem=f"node {node_id!r} is defined again (first at {self._nodes[node_id]})")
            return
        entity = self.make(Entity, source, id=node_id, modality="text", text=text,
                           attributes={"name": name} if name else {})
        yield entity
        if isinstance(entity, Reject):
            return
        self._nodes[node_id] = source
        images_dir = self.image_dirs()[0]
        for image in images:
            image_path = self.dataset_file(image, source, under=images_dir)
            if isinstance(image_path, Reject):
                yield image_path
                continue
            image_id = f"image:{image}"
            yield from self.entity_once(source, image_id, modality="image", image=ImageSource(path=image_path))
            yield from self.first_use(IMAGE_OF, source)
            yield from self.first_use(HAS_IMAGE, source)
            yield self.make(Triplet, source, head=image_id, relation=IMAGE_OF, tail=node_id)
            yield self.make(Triplet, source, head=node_id, relation=HAS_IMAGE, tail=image_id)

    def _edge_records(self, source: SourceRef, raw: Any) -> Iterator[Record]:
        if not isinstance(raw, dict):
            yield Reject(source=source, problem=f"an edge must be a JSON object, got {type(raw).__name__}")
            return
        for field in ("head", "relation", "tail"):
            if not isinstance(raw.get(field), str) or not raw[field]:
                yield Reject(source=source, problem=f"edge has no {field!r} (a non-empty string)")
                return
        head, relation, tail = raw["head"], raw["relation"], raw["tail"]
        for node_id in (head, tail):
            if node_id not in self._nodes:
                problem = f"edge names unknown node {node_id!r} (not defined in {NODES_FILE})"
                yield Reject(source=source, problem=problem)
                return
        if not (yield from self.first_use(relation, source, reject_each_use=True)):  # each such edge is rejected
            return
        yield self.make(Triplet, source, head=head, relation=relation, tail=tail, split=raw.get("split", "train"))


def _first_char(path: Path) -> str:
    """The first non-blank character of a file ('' when there is none), to tell array from object."""
    with open(path, "rb") as f:
        chunk = f.read(4096).removeprefix(UTF8_BOM)
        while chunk:
            stripped = chunk.lstrip(b" \t\r\n")
            if stripped:
                return stripped[:1].decode("latin-1")
            chunk = f.read(4096)
    return ""


def _parse_node(key: str | None, node: Any) -> Node | str:
    """The node's id, text, name and images, or a problem description."""
    if not isinstance(node, dict):
        return f"a node must be a JSON object, got {type(node).__name__}"
    node_id = node.get("id", key)
    if key is not None and node_id != key:
        return f"node {key!r} has a different 'id' field {node_id!r}"
    if not isinstance(node_id, str) or not node_id:
        return "node has no 'id' (a non-empty string)"
    name, gloss, glosses = node.get("name"), node.get("gloss"), node.get("glosses")
    if name is not None and not isinstance(name, str):
        return f"node {node_id!r}: 'name' must be a string"
    if gloss is None and glosses is not None:
        if not isinstance(glosses, list) or not all(isinstance(g, str) for g in glosses):
            return f"node {node_id!r}: 'glosses' must be a list of strings"
        gloss = next((g for g in glosses if collapse_blanks(g)), None)
    elif gloss is not None and not isinstance(gloss, str):
        return f"node {node_id!r}: 'gloss' must be a string"
    name, gloss = collapse_blanks(name or ""), collapse_blanks(gloss or "")
    if not name and not gloss:
        return f"node {node_id!r} has neither a 'name' nor a 'gloss'"
    images = node.get("images", [])
    if not isinstance(images, list) or not all(isinstance(p, str) and p.strip() for p in images):
        return f"node {node_id!r}: 'images' must be a list of non-empty paths"
    text = f"{name}: {gloss}" if name and gloss else name or gloss
    return node_id, text, name or None, list(dict.fromkeys(images))
