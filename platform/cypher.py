"""Every Cypher statement kclip runs, in one place.

Values always travel as ``$parameters``. Relation names, KG names and entity ids are property
values, never labels or types, so user data never reaches query text; the only names that do
(index names) pass through ``quote_name``.

Graph model (one Neo4j database holds many KGs side by side, separated by the ``kg`` property):

    (:KG {name, created_at, next_entity_idx, next_relation_idx})
    (:Entity {kg, id, idx, modality, text, image, image_box, image_width, image_height, attributes, kg_key})
    (:Relation {kg, name, idx, text})
    (:Entity)-[:TRIPLET {rel, split}]->(:Entity)      rel = the Relation's idx

``idx`` is a per-KG integer assigned once at creation (unique, increasing, possibly with gaps):
the sampler and trainer address entities and relations by it, so streaming a million triplets
moves integers, not strings. Triplets carry no ``kg``: both ends do. Every per-KG read starts from
the ``(kg, idx)`` index (``WHERE e.idx IS NOT NULL`` lets the planner seek on its prefix), which is
why there is no separate index on ``kg`` alone, nor one on triplets: each costs every write.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def quote_name(name: str) -> str:
    """A name (label, relationship type, index) made safe for query text: backtick-quoted, escaped."""
    if not name or "\x00" in name:
        raise ValueError(f"not a valid Neo4j name: {name!r}")
    if _PLAIN_NAME.match(name):
        return name
    return "`" + name.replace("`", "``") + "`"


# --- schema -----------------------------------------------------------------------------------

SCHEMA = [
    "CREATE CONSTRAINT kg_name IF NOT EXISTS FOR (k:KG) REQUIRE k.name IS UNIQUE",
    "CREATE CONSTRAINT entity_key IF NOT EXISTS FOR (e:Entity) REQUIRE (e.kg, e.id) IS UNIQUE",
    "CREATE CONSTRAINT relation_key IF NOT EXISTS FOR (r:Relation) REQUIRE (r.kg, r.name) IS UNIQUE",
    "CREATE INDEX entity_idx IF NOT EXISTS FOR (e:Entity) ON (e.kg, e.idx)",
    "CREATE INDEX relation_idx IF NOT EXISTS FOR (r:Relation) ON (r.kg, r.idx)",
]
AWAIT_INDEXES = "CALL db.awaitIndexes($seconds)"

# --- KGs --------------------------------------------------------------------------------------

ENSURE_KG = """
MERGE (k:KG {name: $kg})
ON CREATE SET k.created_at = datetime(), k.next_entity_idx = 0, k.next_relation_idx = 0, k.search_key = $kg_key
"""
# A new random token whenever a load has written entities: samplers keep entity content cached
# until it changes (see models/sampler.py), and a KG dropped and loaded again gets a new one.
TOUCH_KG_CONTENT = "MATCH (k:KG {name: $kg}) SET k.content_version = randomUUID()"
KG_CONTENT_VERSION = "MATCH (k:KG {name: $kg}) RETURN k.content_version AS version"
LIST_KGS = "MATCH (k:KG) RETURN k.name AS name, toString(k.created_at) AS created_at ORDER BY name"
KG_HAS_ENTITIES = "MATCH (e:Entity {kg: $kg}) WHERE e.idx IS NOT NULL RETURN e.id LIMIT 1"
KG_HAS_TRIPLETS = "MATCH (e:Entity {kg: $kg}) WHERE e.idx IS NOT NULL MATCH (e)-[:TRIPLET]->() RETURN 1 LIMIT 1"
# A slice of entity idx at a time (``GraphStore.drop_kg`` reports progress between slices),
# each in bounded inner transactions: triplets first, so no node's DETACH holds a huge edge list.
DELETE_KG_TRIPLETS = """
MATCH (e:Entity {kg: $kg}) WHERE $lo <= e.idx < $hi
CALL (e) { MATCH (e)-[t:TRIPLET]-() DELETE t } IN TRANSACTIONS OF 1000 ROWS
"""
DELETE_KG_NODES = """
MATCH (n:Entity {kg: $kg}) WHERE $lo <= n.idx < $hi
CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 5000 ROWS
"""
DELETE_KG_RELATIONS = "MATCH (r:Relation {kg: $kg}) DELETE r"
DELETE_KG = "MATCH (k:KG {name: $kg}) DELETE k"

# --- writes: every write is one UNWIND batch ----------------------------------------------------

# A block of idx values for the next batch of entities, reserved in its own short transaction:
# the SET takes the KG node's lock, so concurrent loads never hand out the same idx, and holding
# it only this long lets the entity batches themselves run in parallel.
RESERVE_ENTITY_IDX = """
MATCH (k:KG {name: $kg})
SET k.next_entity_idx = k.next_entity_idx + $n
RETURN k.next_entity_idx - $n AS base
"""
# Both return every row's node element id, which the triplet writes use to find their ends by id
# (a direct record lookup) instead of an index seek per end.
CREATE_ENTITIES = """
UNWIND $rows AS row
CREATE (e:Entity {kg: $kg, id: row.id, idx: $base + row.ord, kg_key: $kg_key})
SET e += row.props
RETURN collect(row.ord) AS ords, collect(elementId(e)) AS nodes
"""
MERGE_ENTITIES = """
UNWIND $rows AS row
MERGE (e:Entity {kg: $kg, id: row.id})
ON CREATE SET e.idx = $base + row.ord
SET e += row.props, e.kg_key = $kg_key
RETURN collect(row.ord) AS ords, collect(elementId(e)) AS nodes
"""
MERGE_RELATIONS = """
MATCH (k:KG {name: $kg})
SET k.next_relation_idx = k.next_relation_idx + size($rows)
WITH k.next_relation_idx - size($rows) AS base
UNWIND $rows AS row
MERGE (r:Relation {kg: $kg, name: row.name})
ON CREATE SET r.idx = base + row.ord
SET r.text = row.text
RETURN r.name AS name, r.idx AS idx
"""
# Rows are [head node, relation idx, tail node] of one split; node = the element id from the
# entity writes (element ids are only promised within a transaction; within one load, where no
# node is deleted, they hold). CREATE is for KGs that had no triplets when the load began (the
# loader dropped duplicates itself); MERGE makes every other load idempotent.
_MATCH_ENDS = """
UNWIND $rows AS row
MATCH (h) WHERE elementId(h) = row[0]
MATCH (t) WHERE elementId(t) = row[2]
"""
CREATE_TRIPLETS = _MATCH_ENDS + "CREATE (h)-[:TRIPLET {rel: row[1], split: $split}]->(t)"
MERGE_TRIPLETS = _MATCH_ENDS + "MERGE (h)-[:TRIPLET {rel: row[1], split: $split}]->(t)"

EXISTING_ENTITY_IDS = "UNWIND $ids AS id MATCH (e:Entity {kg: $kg, id: id}) RETURN e.id AS id, elementId(e) AS node"

# --- reads ------------------------------------------------------------------------------------

ENTITY_COUNTS = "MATCH (e:Entity {kg: $kg}) WHERE e.idx IS NOT NULL RETURN e.modality AS modality, count(*) AS n"
RELATION_COUNT = "MATCH (r:Relation {kg: $kg}) WHERE r.idx IS NOT NULL RETURN count(r) AS n"
TRIPLET_COUNTS = """
MATCH (e:Entity {kg: $kg}) USING INDEX e:Entity(kg, idx) WHERE e.idx IS NOT NULL
MATCH (e)-[t:TRIPLET]->()
RETURN t.split AS split, count(t) AS n
"""
RELATIONS = """
MATCH (r:Relation {kg: $kg}) WHERE r.idx IS NOT NULL RETURN r.idx AS idx, r.name AS name, r.text AS text ORDER BY idx
"""

# --- sampler reads: integers in, integers out ------------------------------------------------

ENTITY_IDX_RANGE = """
MATCH (e:Entity {kg: $kg}) WHERE e.idx IS NOT NULL RETURN min(e.idx) AS lo, max(e.idx) AS hi, count(e) AS n
"""
# Triplets of one split, a slice of head idx at a time, as three parallel lists: returning a
# few large lists instead of a million small records is what makes streaming an epoch fast.
TRIPLET_SLICE = """
MATCH (h:Entity {kg: $kg}) WHERE $lo <= h.idx < $hi
MATCH (h)-[t:TRIPLET {split: $split}]->(tl:Entity)
RETURN collect(h.idx) AS heads, collect(t.rel) AS rels, collect(tl.idx) AS tails
"""
# One record of [idx, id, modality, text, image, image_box] lists (collect() keeps nulls inside lists): the
# driver decodes it about twice as fast as a record per entity, and the sampler's workers ask
# for every batch's new entities.
ENTITY_CONTENT = """
UNWIND $idxs AS i
MATCH (e:Entity {kg: $kg, idx: i})
RETURN collect([e.idx, e.id, e.modality, e.text, e.image, e.image_box]) AS rows
"""
# One hop of neighbourhood sampling: for each frontier node, up to $fanout incident train
# triplets in a pseudo-random order seeded by $salt (Cypher's rand() cannot be seeded, and
# resumed runs must sample the same subgraphs). Arithmetic stays below 2^63.
NEIGHBOURS = """
UNWIND $frontier AS i
MATCH (n:Entity {kg: $kg, idx: i})
CALL (n) {
  MATCH (n)-[t:TRIPLET]-(m:Entity)
  WHERE t.split IN $splits
  WITH t, m, startNode(t) = n AS outgoing
  ORDER BY ((m.idx * 1000003 + t.rel * 7919 + $salt) % 2147483647) * 48271 % 2147483647
  LIMIT $fanout
  RETURN t.rel AS rel, m.idx AS other, outgoing
}
RETURN collect(n.idx) AS nodes, collect(rel) AS rels, collect(other) AS others, collect(outgoing) AS outgoing
"""
ENTITIES_PAGE = """
MATCH (e:Entity {kg: $kg}) WHERE $lo <= e.idx < $hi
RETURN e.idx AS idx, e.id AS id, e.modality AS modality, e.text AS text, e.image AS image, e.image_box AS image_box
ORDER BY idx
"""

# --- exploration (the UI) -------------------------------------------------------------------

# (entity search has a section of its own, at the end)
ENTITY_BY_ID = """
MATCH (e:Entity {kg: $kg, id: $id})
RETURN e.idx AS idx, e.id AS id, e.modality AS modality, e.text AS text, e.image AS image, e.image_box AS image_box,
       e.attributes AS attributes, e.image_width AS image_width, e.image_height AS image_height
"""
ENTITY_TRIPLETS = """
MATCH (e:Entity {kg: $kg, id: $id})-[t:TRIPLET]-(o:Entity)
WITH e, t, o LIMIT $limit
MATCH (r:Relation {kg: $kg, idx: t.rel})
RETURN startNode(t) = e AS outgoing, r.name AS relation, t.split AS split,
       o.idx AS idx, o.id AS id, o.modality AS modality, o.text AS text, o.image AS image, o.image_box AS image_box
"""
SAMPLE_ENTITIES = """
MATCH (e:Entity {kg: $kg}) WHERE e.idx IS NOT NULL AND e.modality IN $modalities
RETURN e.idx AS idx, e.id AS id, e.modality AS modality, e.text AS text, e.image AS image, e.image_box AS image_box
ORDER BY e.idx LIMIT $limit
"""
# One entity's triplets counted by (direction, relation), hubs included: the explorer's group
# headings. Directions are matched apart (so a self-loop counts as head and as tail), and counted
# before the few relation names are looked up.
ENTITY_EDGE_COUNTS = """
MATCH (e:Entity {kg: $kg, id: $id})
CALL (e) {
  MATCH (e)-[t:TRIPLET]->(:Entity) RETURN true AS outgoing, t.rel AS rel, count(t) AS n
  UNION ALL
  MATCH (e)<-[t:TRIPLET]-(:Entity) RETURN false AS outgoing, t.rel AS rel, count(t) AS n
}
MATCH (r:Relation {kg: $kg, idx: rel})
RETURN outgoing, r.name AS relation, n
ORDER BY outgoing DESC, relation
"""
# A page of the triplets of each of $ids, in one round trip: the explorer's paged lists (one id,
# one relation, one direction) and its canvas (each node expanded shows its neighbours). Optional
# filters: $relations (names; null = all), $outgoing (null = both directions). Per entity, the
# total that passes the filters and the rows $skip .. $skip + $limit, ordered by direction,
# relation, neighbour idx and split, so pages never overlap. Only the page's rows are projected.
EXPAND_ENTITIES = """
WITH COLLECT { MATCH (r:Relation {kg: $kg}) WHERE r.idx IS NOT NULL AND ($relations IS NULL OR r.name IN $relations)
               RETURN [r.idx, r.name] } AS rels
WITH rels, [r IN rels | r[0]] AS wanted
UNWIND range(0, size($ids) - 1) AS i
MATCH (e:Entity {kg: $kg, id: $ids[i]})
CALL (e, wanted) {
  CALL (e, wanted) {
    MATCH (e)-[t:TRIPLET]->(o:Entity) WHERE ($outgoing IS NULL OR $outgoing) AND t.rel IN wanted
    RETURN true AS outgoing, t, o
    UNION ALL
    MATCH (e)<-[t:TRIPLET]-(o:Entity) WHERE ($outgoing IS NULL OR NOT $outgoing) AND t.rel IN wanted
    RETURN false AS outgoing, t, o
  }
  WITH outgoing, t, o ORDER BY outgoing DESC, t.rel, o.idx, t.split
  RETURN collect([outgoing, t.rel, t.split, o]) AS found
}
RETURN e.id AS id, size(found) AS total,
       [f IN found[$skip..$skip + $limit] |
        {outgoing: f[0], relation: [r IN rels WHERE r[0] = f[1]][0][1], split: f[2], idx: f[3].idx, id: f[3].id,
         modality: f[3].modality, text: f[3].text, image: f[3].image, image_box: f[3].image_box}] AS edges
ORDER BY i
"""

# --- embeddings: one vector index per KG over the entities `kclip embed` has embedded -----------
# The per-KG label and index name derive from the KG name; ``with_names`` quotes them into the
# templates' <label> / <index> slots.

SET_EMBEDDINGS = "UNWIND $rows AS row MATCH (e:Entity {kg: $kg, idx: row[0]}) SET e.embedding = row[1], e:<label>"
DROP_INDEX = "DROP INDEX <index> IF EXISTS"
CREATE_VECTOR_INDEX = """
CREATE VECTOR INDEX <index> IF NOT EXISTS FOR (e:<label>) ON e.embedding
OPTIONS {indexConfig: {`vector.dimensions`: $dimensions, `vector.similarity_function`: 'cosine'}}
"""
VECTOR_INDEX_INFO = "SHOW VECTOR INDEXES YIELD name, options WHERE name = $name RETURN options"
SIMILAR_ENTITIES = """
MATCH (q:Entity {kg: $kg, id: $id}) WHERE q.embedding IS NOT NULL
CALL db.index.vector.queryNodes($index, $k + 1, q.embedding) YIELD node, score
WHERE node <> q
RETURN node.idx AS idx, node.id AS id, node.modality AS modality, node.text AS text, node.image AS image,
       node.image_box AS image_box, score
LIMIT $k
"""


def embedding_label(kg: str) -> str:
    """The label marking a KG's embedded entities (unquoted)."""
    return f"Embedded_{kg}"


def embedding_index(kg: str) -> str:
    """The name of a KG's vector index (unquoted; a parameter where Cypher takes one)."""
    return f"entity_embedding_{kg}"


def with_names(template: str, **names: str) -> str:
    """``template`` with each ``<slot>`` replaced by the quoted name: the one door for names into query text."""
    for slot, name in names.items():
        template = template.replace(f"<{slot}>", quote_name(name))
    if "<" in template.replace("<=", "").replace("<>", ""):
        raise ValueError(f"unfilled name slot in {template!r}")
    return template


# --- evaluation ---------------------------------------------------------------------------------

# Scene-graph relation-swap test: relationships between two objects of the same image, with the
# objects' texts, the predicate's text and the image, for captions "a S p a O" vs "a O p a S".
SWAP_CANDIDATES = """
MATCH (ii:Relation {kg: $kg, name: $in_image})
MATCH (s:Entity {kg: $kg}) USING INDEX s:Entity(kg, idx) WHERE s.idx IS NOT NULL
MATCH (s)-[t:TRIPLET {split: $split}]->(o:Entity)
WHERE t.rel <> ii.idx AND s.modality = 'image' AND o.modality = 'image' AND s.text IS NOT NULL AND o.text IS NOT NULL
MATCH (s)-[:TRIPLET {rel: ii.idx}]->(img:Entity)<-[:TRIPLET {rel: ii.idx}]-(o)
MATCH (r:Relation {kg: $kg, idx: t.rel})
RETURN s.text AS subject, r.text AS predicate, o.text AS object, img.idx AS image
ORDER BY s.idx, t.rel, o.idx
LIMIT $limit
"""
KNOWN_TAILS = "MATCH (h:Entity {kg: $kg, id: $id})-[t:TRIPLET {rel: $rel}]->(o) RETURN o.idx AS idx"
KNOWN_HEADS = "MATCH (o)-[t:TRIPLET {rel: $rel}]->(x:Entity {kg: $kg, id: $id}) RETURN o.idx AS idx"
KNOWN_RELATIONS = """
MATCH (h:Entity {kg: $kg, id: $head})-[t:TRIPLET]->(x:Entity {kg: $kg, id: $tail}) RETURN t.rel AS rel
"""

# --- KG write locks (platform/kg_lock.py): one writer per KG, across machines --------------------

KG_LOCK_CONSTRAINT = "CREATE CONSTRAINT kg_lock_key IF NOT EXISTS FOR (l:KGLock) REQUIRE l.kg IS UNIQUE"
SCHEMA.append(KG_LOCK_CONSTRAINT)  # ensure_schema creates it with the rest
# Taken when free, already ours (a retried attempt), stale (heartbeat older than its holder's TTL,
# on the server's clock), or held by the token the caller found dead. SET _LOCK_ takes the node's
# write lock before anything is read: Neo4j reads committed data, so without it two takers could
# both see the same stale holder and both believe they won.
TRY_LOCK_KG = """
MERGE (l:KGLock {kg: $kg})
SET l._LOCK_ = true
WITH l, (l.token IS NULL OR l.token = $token OR l.token = $dead_token
         OR timestamp() - l.heartbeat > l.ttl_ms) AS free
FOREACH (_ IN CASE WHEN free THEN [1] ELSE [] END |
  SET l.token = $token, l.host = $host, l.machine = $machine, l.pid = $pid, l.command = $command,
      l.ttl_ms = $ttl_ms, l.since = datetime(), l.heartbeat = timestamp())
REMOVE l._LOCK_
RETURN free AS acquired, l.token AS token, l.host AS host, l.machine AS machine, l.pid AS pid,
       l.command AS command, toString(l.since) AS since, timestamp() - l.heartbeat AS age_ms
"""
REFRESH_KG_LOCK = "MATCH (l:KGLock {kg: $kg, token: $token}) SET l.heartbeat = timestamp() RETURN count(l) AS held"
RELEASE_KG_LOCK = "MATCH (l:KGLock {kg: $kg, token: $token}) DELETE l"

# --- management: kclip drop and kclip verify ------------------------------------------------------

# Entity properties holding a media store key. The store keeps a file while any entity of any KG
# names it in one of these; a property added for media must be listed here, or drops delete its files.
MEDIA_KEY_PROPERTIES = ["image"]
KG_MEDIA_KEYS = """
MATCH (e:Entity {kg: $kg}) WHERE e.idx IS NOT NULL
UNWIND $properties AS p
WITH e[p] AS key WHERE key IS NOT NULL
RETURN collect(DISTINCT key) AS keys
"""
# One scan of every other KG's entities per chunk of keys (no index on image keys: it would cost
# every write, and drops are rare); `IN $keys` is a hash lookup.
MEDIA_KEYS_USED_ELSEWHERE = """
MATCH (e:Entity) WHERE e.kg <> $kg
UNWIND $properties AS p
WITH e[p] AS key WHERE key IN $keys
RETURN collect(DISTINCT key) AS keys
"""
# Test and dev triplets whose (head, relation, tail) is in train too, by split: cheap enough to
# run after every load (each head's edges are read once; EXISTS expands into the pair).
SPLIT_OVERLAP = """
MATCH (h:Entity {kg: $kg}) USING INDEX h:Entity(kg, idx) WHERE h.idx IS NOT NULL
MATCH (h)-[t:TRIPLET]->(x) WHERE t.split <> $train
  AND EXISTS { MATCH (h)-[u:TRIPLET {split: $train}]->(x) WHERE u.rel = t.rel }
RETURN t.split AS split, count(t) AS n
"""
# The triplet checks of `kclip verify`, for the heads of one idx slice. Each head's edges are
# grouped by (relation, tail) inside the head's own subquery, so memory follows the largest
# degree, not the KG; only the few problem groups reach the aggregation. Per group, `splits` lists
# the split of every copy: a split twice is a duplicate, train beside another split is leakage.
# A tail outside the KG (another KG's entity, or no entity at all) and a relation idx without a
# Relation node ($rels: the KG's relation idxs) are dangling; so is an edge into the head from
# outside the KG (the second branch: it is no head's outgoing edge in this KG).
VERIFY_TRIPLET_SLICE = """
MATCH (h:Entity {kg: $kg}) WHERE $lo <= h.idx < $hi
CALL (h) {
  MATCH (h)-[t:TRIPLET]->(x)
  WITH x, t.rel AS rel, collect(t.split) AS splits
  WITH x, rel, splits, reduce(seen = [], s IN splits | CASE WHEN s IN seen THEN seen ELSE seen + s END) AS kinds
  WITH x, rel, splits, size(splits) - size(kinds) AS extra,
       CASE WHEN $train IN kinds THEN size(kinds) - 1 ELSE 0 END AS leaked,
       coalesce(x.kg, '') <> $kg AS foreign, NOT rel IN $rels AS unknown
  WHERE extra > 0 OR leaked > 0 OR foreign OR unknown
  RETURN h.id AS head, x.id AS tail, x.kg AS other_kg, rel, splits, extra, leaked, foreign, unknown
  UNION ALL
  MATCH (h)<-[t:TRIPLET]-(y) WHERE coalesce(y.kg, '') <> $kg
  RETURN y.id AS head, h.id AS tail, y.kg AS other_kg, t.rel AS rel, [t.split] AS splits, 0 AS extra,
         0 AS leaked, true AS foreign, false AS unknown
}
WITH [head, rel, tail, splits, other_kg] AS example, extra, leaked, foreign, unknown, size(splits) AS copies
RETURN sum(extra) AS duplicates, collect(CASE WHEN extra > 0 THEN example END)[..$k] AS duplicates_examples,
       sum(leaked) AS leaked, collect(CASE WHEN leaked > 0 THEN example END)[..$k] AS leaked_examples,
       sum(CASE WHEN foreign THEN copies ELSE 0 END) AS cross_kg,
       collect(CASE WHEN foreign THEN example END)[..$k] AS cross_kg_examples,
       sum(CASE WHEN unknown THEN copies ELSE 0 END) AS unknown_relations,
       collect(CASE WHEN unknown THEN example END)[..$k] AS unknown_relations_examples
"""

# --- embeddings read back: who wrote them, bulk vectors, search by vector (Predict, Neighbours) ---

# `kclip embed` records on the KG node which run, at which checkpoint step, wrote the embeddings,
# and the KG's content version then: Predict reads the vectors back instead of encoding every
# entity again only while all three still hold. Cleared before a write starts, so an embed cut
# short leaves no record (and the next predictor encodes for itself).
CLEAR_EMBEDDING_ORIGIN = """
MATCH (k:KG {name: $kg})
REMOVE k.embedded_run, k.embedded_step, k.embedded_dimensions, k.embedded_content_version, k.embedded_at
"""
SET_EMBEDDING_ORIGIN = """
MATCH (k:KG {name: $kg})
SET k.embedded_run = $run, k.embedded_step = $step, k.embedded_dimensions = $dimensions,
    k.embedded_content_version = $content_version, k.embedded_at = datetime()
"""
EMBEDDING_ORIGIN = """
MATCH (k:KG {name: $kg}) WHERE k.embedded_run IS NOT NULL
RETURN k.embedded_run AS run, k.embedded_step AS step, k.embedded_dimensions AS dimensions,
       k.embedded_content_version AS content_version, toString(k.embedded_at) AS embedded_at
"""
# A slice of idx at a time as three parallel lists (as TRIPLET_SLICE: a few large lists decode
# many times faster than a record per entity).
EMBEDDING_SLICE = """
MATCH (e:Entity {kg: $kg}) WHERE $lo <= e.idx < $hi AND e.embedding IS NOT NULL
RETURN collect(e.idx) AS idx, collect(e.modality) AS modality, collect(e.embedding) AS vectors
"""
ENTITY_EMBEDDING = "MATCH (e:Entity {kg: $kg, id: $id}) RETURN e.embedding AS vector"
# A fixed pseudo-random sample of the KG's embeddings (the same on every call: a page's verdict on
# the space must not flicker), by a multiplicative hash of idx.
EMBEDDING_SAMPLE = """
MATCH (e:<label>) WHERE e.kg = $kg AND e.embedding IS NOT NULL
WITH e ORDER BY (e.idx * 2654435761) % 4294967296 LIMIT $n
RETURN collect(e.embedding) AS vectors
"""
# The $n nearest entities by the index, kept when of $modality (null: any) and not in $exclude,
# then scored exactly (the index's own scores are approximate: it searches quantized vectors) and
# the best $k returned; ``scanned`` < $n says the index has no more to give. Rows are
# [idx, id, modality, text, image, image_box, score], score = (1 + cos) / 2 as Neo4j reports it.
NEAREST_BY_VECTOR = """
CALL db.index.vector.queryNodes($index, $n, $vector) YIELD node
WITH count(*) AS scanned,
     collect(CASE WHEN ($modality IS NULL OR node.modality = $modality) AND NOT node.id IN $exclude THEN node END) AS kept
CALL (kept) {
  UNWIND kept AS node
  WITH node, vector.similarity.cosine(node.embedding, $vector) AS score
  ORDER BY score DESC LIMIT $k
  RETURN collect([node.idx, node.id, node.modality, node.text, node.image, node.image_box, score]) AS hits
}
RETURN scanned, hits
"""

# --- entity search: one full-text index for every KG, the KG filter inside the Lucene query --------
#
# Each entity carries ``kg_key``, a one-token stand-in for its KG's name ("k" + 32 hex digits of the
# name's SHA-256): the analyser splits a name such as "wn-copy" into "wn" and "copy", so names could
# not tell "wn" from "wn-copy", while keys never share a token. A search asks Lucene for
# ``+kg_key:<key>^0 +<word> ...``: every match in the KG is counted and reachable, best first (``^0``:
# the filter adds nothing to scores). ``id`` is indexed beside ``text``, so entities without text
# (images) are found by their id, analysed like text ("image:12" is the words "image" and "12").

SEARCH_INDEX = "entity_text"
SEARCH_PROPERTIES = ["kg_key", "text", "id"]
SEARCH_FIELDS = ("text", "id")  # the fields a user's words are matched in
SEARCH_ANALYZER = "standard-no-stop-words"  # Unicode word breaks, lower case; no stemming, no stop words
MAX_SEARCH_WORDS = 64  # a word costs a few Lucene clauses, and Lucene refuses queries over 1,024
_MAX_SPLIT_PARTS = 8  # an id such as "object:1", as a prefix, is also "object" then "1…" (_word_start)
_MAX_PREFIX_CHARS = 255  # the analyser's longest token; Lucene refuses prefixes of over 1,000
SCHEMA.append(  # ensure_schema first drops an index of this name whose definition differs (older kclip)
    f"CREATE FULLTEXT INDEX {SEARCH_INDEX} IF NOT EXISTS FOR (e:Entity) "
    f"ON EACH [{', '.join('e.' + p for p in SEARCH_PROPERTIES)}] "
    f"OPTIONS {{indexConfig: {{`fulltext.analyzer`: '{SEARCH_ANALYZER}'}}}}"
)
SEARCH_INDEX_INFO = """
SHOW FULLTEXT INDEXES YIELD name, labelsOrTypes, properties, options WHERE name = $name
RETURN labelsOrTypes AS labels, properties, options.indexConfig.`fulltext.analyzer` AS analyzer
"""
# A KG node gets its search_key when created (every entity write sets kg_key since); KGs created by
# an older kclip get it once the backfill has given kg_key to all their entities, so an interrupted
# backfill resumes where it stopped.
KGS_WITHOUT_SEARCH_KEY = "MATCH (k:KG) WHERE k.search_key IS NULL RETURN k.name AS name ORDER BY name"
KG_SEARCH_KEY = "MATCH (k:KG {name: $kg}) RETURN k.search_key AS key"
BACKFILL_SEARCH_KEY = """
MATCH (e:Entity {kg: $kg}) WHERE e.idx IS NOT NULL AND (e.kg_key IS NULL OR e.kg_key <> $kg_key)
CALL (e) { SET e.kg_key = $kg_key } IN TRANSACTIONS OF 10000 ROWS
"""
SET_SEARCH_KEY = "MATCH (k:KG {name: $kg}) SET k.search_key = $kg_key"
# A page of a search and how many match in all, in one round trip. $exact (the last word as a whole
# word) and $prefix (the last word only as the start of one) match disjoint sets, so whole-word
# matches come first however scores fall. Each set is read whole and the page sliced from the two
# (the procedure's own {skip, limit} orders ties differently for each limit, so that on WN18RR some
# landed on two pages and others on none). Within a set: by score, then the shorter text, then id,
# where at most $sort_max match: for "circ", "circle" before a caption that mentions a circle
# (prefix matches tie, and Lucene's order of ties changes as other KGs are written to the shared
# index). Sorting reads every match's text (190 ms for WN18RR's 33k matches of "a"), so larger sets
# keep Lucene's order (by score; ties in a fixed order while the index is unchanged).
# Rows: [idx, id, modality, text, image, image_box, score].
SEARCH_ENTITIES = """
CALL () { CALL db.index.fulltext.queryNodes($index, $exact) YIELD node, score RETURN collect([node, score]) AS exact }
CALL () { CALL db.index.fulltext.queryNodes($index, $prefix) YIELD node, score RETURN collect([node, score]) AS prefix }
WITH exact, prefix, size(exact) + size(prefix) AS total
CALL (exact, prefix, total) {
  UNWIND CASE WHEN total <= $sort_max THEN [hit IN exact | [0, hit]] + [hit IN prefix | [1, hit]] ELSE [] END AS tagged
  WITH tagged ORDER BY tagged[0], tagged[1][1] DESC, size(coalesce(tagged[1][0].text, tagged[1][0].id)), tagged[1][0].id
  RETURN collect(tagged[1]) AS sorted
}
WITH total, CASE WHEN total <= $sort_max THEN sorted ELSE exact + prefix END AS hits
RETURN total,
       [hit IN hits[$skip..$skip + $limit] |
        [hit[0].idx, hit[0].id, hit[0].modality, hit[0].text, hit[0].image, hit[0].image_box, hit[1]]] AS page
"""
SORTED_SEARCH_MAX = 5000
_LUCENE_SPECIAL = re.compile(r'([+\-&|!(){}\[\]^"~*?:\\/])')
_EDGE_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")
_WORD_BREAK = re.compile(r"\W+")


@dataclass(frozen=True)
class SearchQuery:
    """A user's search as the two Lucene queries ``SEARCH_ENTITIES`` takes."""

    exact: str  # every word as a whole word
    prefix: str  # the same, but the last word only as the start of a word
    words: int  # the words searched
    given: int  # the words given: more than ``words`` when the search was cut to MAX_SEARCH_WORDS


def search_key(kg: str) -> str:
    """The KG's one-token key in the full-text index (its entities' ``kg_key``)."""
    return "k" + hashlib.sha256(kg.encode("utf-8")).hexdigest()[:32]


def search_query(kg: str, text: str) -> SearchQuery | None:
    """``text`` as Lucene queries over the KG's entities: every word must match, in the text or the
    id, as a whole word (a phrase, analysed as the index was, so "a.m." or "object:12" match as
    written); the last word as the start of a word too. Lucene syntax is taken literally. Words
    with no letter or digit are left out (the analyser drops them); None when no word is left."""
    words = [w for w in text.split() if any(c.isalpha() or c.isdecimal() for c in w)]
    if not words:
        return None
    searched = words[:MAX_SEARCH_WORDS]
    required = [f"+kg_key:{search_key(kg)}^0"] + [f"+({_whole_word(w)})" for w in searched[:-1]]
    last = searched[-1]
    exact = " ".join([*required, f"+({_whole_word(last)})"])
    prefix = " ".join([*required, f"+({_word_start(last)})", f"-({_whole_word(last)})"])
    return SearchQuery(exact, prefix, len(searched), len(words))


def _whole_word(word: str) -> str:
    phrase = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return " ".join(f"{field}:{phrase}" for field in SEARCH_FIELDS)


def _word_start(word: str) -> str:
    """Lucene for "a word starting with ``word``". Prefixes are not analysed, so the stem is taken
    as one token ("name:circ" finds "name:circle", one token to the analyser, and "a.m" finds
    "a.m."). In ids the analyser splits ("object:1" is "object" and "1"), a stem is also taken as
    whole words then a prefix, so "object:1" finds "object:12" (the words' order is not checked)."""
    stem = _EDGE_PUNCTUATION.sub("", word).lower()[:_MAX_PREFIX_CHARS]
    clauses = [f"{field}:{_literal(stem)}*" for field in SEARCH_FIELDS]
    parts = [p for p in _WORD_BREAK.split(stem) if p]
    if 1 < len(parts) <= _MAX_SPLIT_PARTS:
        words = [f'"{p}"' for p in parts[:-1]] + [f"{_literal(parts[-1])}*"]
        clauses.append("(" + " ".join(f"+id:{w}" for w in words) + ")")
    return " ".join(clauses)


def _literal(term: str) -> str:
    """A term with Lucene's special characters escaped."""
    return _LUCENE_SPECIAL.sub(r"\\\1", term)
