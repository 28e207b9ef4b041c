"""The generated catalog's queries: a hidden intent sampled around one product, the noisy text a
shopper types for it (synonyms, hypernyms, colour and material families, misspellings, word order),
and the TREC-style pool of products judged for it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import _catalog_vocab as V
from .catalog_products import pick

QUERY_COLUMNS = ("query_id", "text", "specificity", "constraints", "noise")
CONSTRAINT_KEYS = ("category", "product_type", "hypernym", "accepted_types", "related_types",
                   "colour_family", "brand", "material_family", "size", "price_max")
SPECIFICITIES = ("broad", "medium", "specific")
NOISE_TYPES = ("synonym", "hypernym", "inflection", "colour_family", "colour_variant",
               "material_family", "word_order", "dropped_word", "filler", "misspelling",
               "lowercase")


# ------------------------------------------------------------------ intents and their text
_ATTR_WEIGHTS = {"colour_family": 0.3, "brand": 0.25, "material_family": 0.2,
                 "price_max": 0.15, "size": 0.1}


def _price_cap(price: float, bump: bool) -> int:
    caps = [c for c in V.PRICE_CAPS if c >= price] or [V.PRICE_CAPS[-1] * 2]
    return caps[1] if bump and len(caps) > 1 else caps[0]


def sample_intent(rng, prod: Mapping, spec: str, lines) -> tuple[dict, bool]:
    """Hidden intent anchored on one product (so exact matches usually exist)."""
    t = V.TYPES[prod["product_type"]]
    hyper = None
    if (spec == "broad" and rng.random() < 0.3) or (spec == "medium" and rng.random() < 0.15):
        hyps = [h for h, members in V.HYPERNYMS.items() if t.name in members]
        hyper = hyps[rng.integers(len(hyps))] if hyps else None
    n_attr = {"broad": 0, "medium": 1, "specific": 2 + int(rng.random() < 0.4)}[spec]
    families = {V.COLOUR_FAMILY[x] for x in V.PALETTES[t.palette]} if t.coloured else set()
    options = {"colour_family": len(families) > 1,
               "brand": len(lines[t.name]) > 1 or hyper is not None,
               "material_family": len({V.material_family(m) for m in t.materials}) > 1,
               "price_max": True, "size": len(t.sizes) > 1 and hyper is None}
    keys = [k for k, ok in options.items() if ok]
    p = np.array([_ATTR_WEIGHTS[k] for k in keys])
    chosen = {str(k) for k in rng.choice(keys, size=min(n_attr, len(keys)), replace=False,
                                         p=p / p.sum())}
    c = dict.fromkeys(CONSTRAINT_KEYS)
    c.update(category=t.category, product_type=None if hyper else t.name, hypernym=hyper,
             accepted_types=list(V.HYPERNYMS[hyper]) if hyper else [t.name],
             related_types=[] if hyper else list(t.related))
    anchor = {"colour_family": V.COLOUR_FAMILY.get(prod["colour"]), "brand": prod["brand"],
              "material_family": V.material_family(prod["material"]), "size": prod["size"],
              "price_max": _price_cap(prod["price"], rng.random() < 0.3)}
    for k in CONSTRAINT_KEYS:
        if k in chosen:
            c[k] = anchor[k]
    off = bool(chosen) and rng.random() < 0.08  # intent not built from one listing
    if off:
        k = sorted(chosen)[rng.integers(len(chosen))]
        alts = {"colour_family": lambda: sorted(families),
                "brand": lambda: [b for b, _ in V.CATEGORIES[t.category].brands],
                "material_family": lambda: sorted({V.material_family(m) for m in t.materials}),
                "size": lambda: list(t.sizes),
                "price_max": lambda: [x for x in V.PRICE_CAPS if x < prod["price"]] or [anchor[k]]}[k]()
        c[k] = alts[rng.integers(len(alts))]
    return c, off


def _misspell(rng, word: str) -> str:
    i = int(rng.integers(1, len(word) - 1))
    op = rng.random()
    if op < 0.35 and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]  # swap
    if op < 0.65:
        return word[:i] + word[i + 1:]  # drop
    if op < 0.8:
        return word[:i] + word[i] + word[i:]  # double
    near = "qwertyuiopasdfghjklzxcvbnm"
    k = near.find(word[i].lower())
    return word[:i] + near[(k + 1) % 26 if k >= 0 else 0] + word[i + 1:]  # neighbour key


def _size_phrase(rng, t: V.TypeSpec, size: str) -> str:
    r = rng.random()
    if t.sizes is V.SIZE_SCHEMES["shoe"]:
        return f"size {size}" if r < 0.6 else size if r < 0.8 else f"sz {size}"
    if size in V.APPAREL_SIZE_WORDS:
        return f"size {size}" if r < 0.5 else V.APPAREL_SIZE_WORDS[size] if r < 0.85 else size
    if "x" in size and size.replace("x", "").isdigit():
        w, l_ = size.split("x")
        return (size, f"{w} x {l_}", f"w{w} l{l_}", f"{w}w {l_}l")[int(r * 4)]
    return size.replace(" ", "") if r < 0.5 else size


def realise(rng, c: dict, prod: Mapping) -> tuple[str, list[str]]:
    """Shopper text for an intent, with the perturbations applied listed in ``noise``."""
    t = V.TYPES[prod["product_type"]]
    noise: list[str] = []
    if c["hypernym"]:
        head = pick(V.HYPERNYM_WORDS[c["hypernym"]], rng.random())
        noise.append("hypernym")
    else:
        r = rng.random()
        if r < 0.42 and t.synonyms:
            head = pick(t.synonyms, rng.random())
            noise.append("synonym")
        elif r < 0.52 and len(t.query_names) > 1:
            head = t.query_names[1]
            noise.append("inflection")
        else:
            head = t.query_names[0]
    slot = dict.fromkeys(("brand", "colour", "material", "size", "price"), "")
    if c["colour_family"]:
        fam, own = c["colour_family"], prod["colour"]
        own = own if V.COLOUR_FAMILY[own] == fam else V.FAMILY_QUERY_WORDS[fam][0]
        r = rng.random()
        siblings = [w for w in V.COLOUR_FAMILIES[fam] if w != own]
        word = (pick(V.FAMILY_QUERY_WORDS[fam], rng.random()) if r < 0.45 else
                pick(siblings, rng.random()) if r < 0.65 and siblings else own)
        if word != own:
            noise.append("colour_family" if word in V.FAMILY_QUERY_WORDS[fam] else "colour_variant")
        slot["colour"] = word
    if c["material_family"]:
        fam = c["material_family"]
        own = prod["material"] if V.material_family(prod["material"]) == fam else fam
        word = fam if rng.random() < 0.5 else own
        if word != own:
            noise.append("material_family")
        slot["material"] = word
    if c["brand"]:
        slot["brand"] = c["brand"]
    if c["size"]:
        slot["size"] = _size_phrase(rng, t, c["size"])
    if c["price_max"] is not None:
        cap = int(c["price_max"])
        slot["price"] = pick((f"under ${cap}", f"under {cap}", f"below ${cap}",
                               f"less than ${cap}", f"under {cap} dollars"), rng.random())
    head_words = head.split()
    if len(head_words) == 2 and len(head_words[1]) >= 3 and rng.random() < 0.07:
        head_words = head_words[1:]  # "rain jacket" -> "jacket"
        noise.append("dropped_word")
    head = " ".join(head_words)
    mods = [slot[k] for k in ("brand", "colour", "material") if slot[k]]
    tail = [slot[k] for k in ("size", "price") if slot[k]]
    words = mods + [head] + tail
    if rng.random() < 0.22 and (mods or tail):
        r = rng.random()
        if r < 0.35:
            order = [head] + mods + tail  # "sneakers navy acme"
        elif r < 0.6 and slot["colour"]:
            rest = [m for m in mods if m != slot["colour"]]
            order = rest + [head, "in", slot["colour"]] + tail
        elif r < 0.8 and tail:
            order = tail + mods + [head]
        else:
            order = [mods[k] for k in rng.permutation(len(mods))] + [head] + tail
            if tail and rng.random() < 0.5:
                order = [head] + order[:-1 - len(tail)] + tail
        if order != words:
            noise.append("word_order")
            words = order
    if rng.random() < 0.08:
        gendered = any(a in ("Men's", "Women's") for a in t.audience)
        pool = V.GENDER_WORDS + V.FILLER_WORDS if gendered else V.FILLER_WORDS
        filler = pick(pool, rng.random())
        front = rng.random() < 0.5 and not filler.startswith("for ")
        words = [filler] + words if front else words + [filler]
        noise.append("filler")
    text = " ".join(words)
    if rng.random() < 0.12:
        tokens = text.split(" ")
        cand = [i for i, w in enumerate(tokens) if len(w) >= 4 and w.isalpha()]
        if cand:
            i = cand[rng.integers(len(cand))]
            tokens[i] = _misspell(rng, tokens[i])
            text = " ".join(tokens)
            noise.append("misspelling")
    r = rng.random()
    cased = text.lower() if r < 0.75 else text[:1].upper() + text[1:] if r < 0.9 else text
    if cased == text.lower() and cased != text:
        noise.append("lowercase")
    return cased, noise


# ------------------------------------------------------------------ judging pool
def _choose(rng, idx: np.ndarray, k: int) -> np.ndarray:
    return idx if k >= len(idx) else rng.choice(idx, size=k, replace=False)


def judging_pool(rng, g: np.ndarray, overlap: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """TREC-style judging pool: exact (<= k/2), partial, lexical hard negatives, random."""
    exact = _choose(rng, np.flatnonzero(g == 2), k // 2)
    partial = _choose(rng, np.flatnonzero(g == 1), round((k - len(exact)) * 0.4))
    left = k - len(exact) - len(partial)
    hard_c = np.flatnonzero((g == 0) & (overlap > 0))
    n_hard = min(len(hard_c), round(left * 0.6))
    score = overlap[hard_c] + rng.random(len(hard_c))  # most shared words first, random ties
    hard = hard_c[np.argsort(-score, kind="stable")[:n_hard]]
    taken = np.zeros(len(g), dtype=bool)
    taken[hard] = True
    rand = _choose(rng, np.flatnonzero((g == 0) & ~taken), left - n_hard)
    return {"exact": exact, "partial": partial, "hard_negative": hard, "random_negative": rand}
