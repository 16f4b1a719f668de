"""Exact path-dependent TreeSHAP for LightGBM at a fraction of pred_contrib's cost.

``shap_values(booster, X)`` returns the same values, layout and bias (last) column as
``booster.predict(X, pred_contrib=True)`` for single-output models (binary, regression), equal
up to float64 rounding (~1e-15). Use ``TreeShap(booster)`` / ``explainer_for(booster)`` to reuse
the precomputed tables across chunks.

Method (FastTreeSHAP v2 style). For a leaf with value ``v`` whose path holds ``k`` distinct
features (repeated splits on a feature are merged: the row satisfies the merged condition iff it
satisfies all of them, and its zero fraction is the product of the cover ratios) with zero
fractions ``z_i``, a row only matters through ``b``, the bitset of satisfied conditions. With
``w_j = j! (k-1-j)! / k!`` and ``e_j(b)`` the coefficient of ``t^j`` in ``prod_{i in b} (t + z_i)``,
define ``G(b) = v * prod_{i not in b} z_i * sum_j w_j e_j(b)``. Then the leaf contributes::

    phi_p = -G(b)                                  if condition p is not satisfied
    phi_p = (1 - z_p) / z_p * G(b without p)       if it is

so each leaf needs one table of 2^k doubles. Two sibling leaves split on a feature new to their
path share their lookups for the common features (tables P and Q in ``_fill_tables``).
Explaining a block of rows costs, per tree, one vectorised decision per internal node, one bit
operation per edge and about k table lookups per leaf (k/2 for sibling pairs) instead of
LightGBM's O(leaves * depth^2) path walk. Leaves deeper than
``max_table_depth`` (or with a zero cover fraction) are computed per row from the same formula.
Multiclass models, linear trees and sparse input are delegated to ``pred_contrib`` (logged once).
"""
from __future__ import annotations

import logging
import math
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

logger = logging.getLogger(__name__)

# LightGBM's kZeroThreshold is the float 1e-35f; values within it are treated as zero.
_K_ZERO = float(np.float32(1e-35))
_MISSING_CODES = {"None": 0, "Zero": 1, "NaN": 2}
_ROW_BLOCK = 128


class UnsupportedModel(ValueError):
    """Raised when a model has a shape this kernel does not explain (caller falls back)."""


# --------------------------------------------------------------------------------------------
# Parsing: booster.dump_model() -> flat arrays
# --------------------------------------------------------------------------------------------


@dataclass
class _Forest:
    """Flat arrays for all trees. Node ids are tree-local preorder ids over internal nodes and
    leaves; internal nodes are also listed globally in preorder (parent before children)."""

    n_features: int
    tree_int_start: np.ndarray  # (T+1,) internal-node range per tree
    tree_leaf_start: np.ndarray  # (T+1,) leaf range per tree
    tree_expected: np.ndarray  # (T,) LightGBM's Tree::ExpectedValue per tree
    int_self: np.ndarray  # local node id of the internal node
    int_left: np.ndarray  # local node id of its left child
    int_right: np.ndarray
    int_bit: np.ndarray  # path position (pattern bit) of its split feature
    int_feature: np.ndarray
    int_threshold: np.ndarray
    int_nan_left: np.ndarray  # decision for NaN input (numerical splits)
    int_zero_left: np.ndarray  # decision for 0 input (numerical splits)
    int_kind: np.ndarray  # 0 numerical, 1 categorical
    int_cat_start: np.ndarray  # offset into cat_words
    int_cat_len: np.ndarray  # number of 32-bit bitset words
    cat_words: np.ndarray
    leaf_node: np.ndarray  # local node id of the leaf
    leaf_value: np.ndarray
    leaf_k: np.ndarray  # distinct features on the path
    leaf_path_start: np.ndarray  # offset into path_feature / path_zero
    leaf_sibling: np.ndarray  # for a left leaf whose sibling is a leaf and whose parent splits on
    # a feature new to the path: the sibling's global index (the pair shares one table); else -1
    path_feature: np.ndarray  # per leaf, features in order of first appearance on the path
    path_zero: np.ndarray  # merged zero fractions (product of cover ratios per feature)
    max_k: int
    max_nodes: int


_INT_KEYS = ["int_self", "int_left", "int_right", "int_bit", "int_feature", "int_nan_left",
             "int_zero_left", "int_kind", "int_cat_start", "int_cat_len", "leaf_node", "leaf_k",
             "leaf_path_start", "leaf_sibling", "path_feature"]
_FLOAT_KEYS = ["int_threshold", "leaf_value", "path_zero"]


class _TreeBuilder:
    """Appends trees to flat lists in preorder, merging duplicate features along each path."""

    def __init__(self) -> None:
        self.f: dict[str, list] = {k: [] for k in _INT_KEYS + _FLOAT_KEYS}
        self.cat_words: list[int] = []
        self.max_k = 0
        self.max_nodes = 1

    def add_tree(self, root: dict[str, Any]) -> float:
        """Append one tree; returns its expected value as LightGBM computes it."""
        self.n_local = 0
        self.expected = 0.0
        if "leaf_value" in root:  # single-leaf tree: contributes only to the bias
            self._add_leaf(root, [], [])
            self.expected = float(root["leaf_value"])
        else:
            self.total = float(root["internal_count"])
            self._walk(root, [], [], self.total)
        self.max_nodes = max(self.max_nodes, self.n_local)
        return self.expected

    def _walk(self, node: dict[str, Any], feats: list[int], zeros: list[float], count: float) -> int:
        """Add ``node``'s subtree; returns its local id."""
        if "leaf_value" in node:
            self.expected += _count(node) / self.total * float(node["leaf_value"])
            return self._add_leaf(node, feats, zeros)
        me = self.n_local
        self.n_local += 1
        slot = self._add_internal(node, me)
        f = int(node["split_feature"])
        pos = feats.index(f) if f in feats else len(feats)
        self.f["int_bit"][slot] = pos
        first_leaf = len(self.f["leaf_node"])
        for key in ("left_child", "right_child"):
            child = node[key]
            frac = _count(child) / count
            if pos < len(feats):
                cf, cz = feats, list(zeros)
                cz[pos] *= frac
            else:
                cf, cz = feats + [f], zeros + [frac]
            self.f["int_" + key.split("_")[0]][slot] = self._walk(child, cf, cz, _count(child))
        if pos == len(feats) and "leaf_value" in node["left_child"] and "leaf_value" in node["right_child"]:
            self.f["leaf_sibling"][first_leaf] = first_leaf + 1
        return me

    def _add_internal(self, node: dict[str, Any], me: int) -> int:
        """Append an internal node's split description; returns its global slot."""
        f = self.f
        slot = len(f["int_self"])
        missing = _MISSING_CODES[node.get("missing_type", "None")]
        default_left = int(bool(node.get("default_left", False)))
        values = {"int_self": me, "int_left": -1, "int_right": -1, "int_bit": 0,
                  "int_feature": int(node["split_feature"]), "int_cat_start": 0, "int_cat_len": 0}
        if node["decision_type"] == "==":
            cats = [int(c) for c in str(node["threshold"]).split("||") if c != ""]
            words = [0] * ((max(cats) // 32 + 1) if cats else 0)
            for c in cats:
                words[c // 32] |= 1 << (c % 32)
            values.update(int_kind=1, int_threshold=0.0, int_nan_left=0, int_zero_left=0,
                          int_cat_start=len(self.cat_words), int_cat_len=len(words))
            self.cat_words.extend(words)
        elif node["decision_type"] == "<=":
            thr = float(node["threshold"])
            zero_left = int(0.0 <= thr)
            # NumericalDecision: NaN is read as 0 unless missing type is NaN; missing values
            # (NaN for type NaN, 0/NaN for type Zero) follow default_left
            nan_left = default_left if missing != 0 else zero_left
            values.update(int_kind=0, int_threshold=thr, int_nan_left=nan_left,
                          int_zero_left=default_left if missing == 1 else zero_left)
        else:
            raise UnsupportedModel(f"unknown decision_type {node['decision_type']!r}")
        for key, val in values.items():
            f[key].append(val)
        return slot

    def _add_leaf(self, node: dict[str, Any], feats: list[int], zeros: list[float]) -> int:
        """Append a leaf with its merged path; returns its local id."""
        me = self.n_local
        self.n_local += 1
        f = self.f
        f["leaf_node"].append(me)
        f["leaf_value"].append(float(node["leaf_value"]))
        f["leaf_k"].append(len(feats))
        f["leaf_path_start"].append(len(f["path_feature"]))
        f["leaf_sibling"].append(-1)
        f["path_feature"].extend(feats)
        f["path_zero"].extend(zeros)
        self.max_k = max(self.max_k, len(feats))
        return me


def _count(node: dict[str, Any]) -> float:
    """Data count LightGBM uses for cover ratios (internal_count or leaf_count)."""
    return float(node["internal_count"] if "internal_count" in node else node.get("leaf_count", 0))


def _parse(dump: dict[str, Any], n_features: int) -> _Forest:
    """Turn ``dump_model()`` output into a ``_Forest``; raises UnsupportedModel when needed."""
    if dump.get("num_tree_per_iteration", 1) != 1 or dump.get("num_class", 1) != 1:
        raise UnsupportedModel("multiclass / multi-output models are not supported")
    builder = _TreeBuilder()
    int_start, leaf_start, expected = [0], [0], []
    for tree in dump["tree_info"]:
        if _is_linear(tree["tree_structure"]):
            raise UnsupportedModel("linear trees are not supported")
        expected.append(builder.add_tree(tree["tree_structure"]))
        int_start.append(len(builder.f["int_self"]))
        leaf_start.append(len(builder.f["leaf_node"]))
    if builder.max_k > 62:
        raise UnsupportedModel(f"a path has {builder.max_k} distinct features (> 62)")
    arrays = {k: np.asarray(builder.f[k], dtype=np.int64) for k in _INT_KEYS}
    arrays.update({k: np.asarray(builder.f[k], dtype=np.float64) for k in _FLOAT_KEYS})
    return _Forest(
        n_features=n_features,
        tree_int_start=np.asarray(int_start, dtype=np.int64),
        tree_leaf_start=np.asarray(leaf_start, dtype=np.int64),
        tree_expected=np.asarray(expected, dtype=np.float64),
        cat_words=np.asarray(builder.cat_words, dtype=np.uint32),
        max_k=builder.max_k,
        max_nodes=builder.max_nodes,
        **arrays,
    )


def _is_linear(node: dict[str, Any]) -> bool:
    """True if the tree has linear leaves (``leaf_coeff`` in the dump)."""
    while "leaf_value" not in node:
        node = node["left_child"]
    return "leaf_coeff" in node


# --------------------------------------------------------------------------------------------
# Numba kernels
# --------------------------------------------------------------------------------------------


@njit(cache=True)
def _shapley_weights(k: int, w: np.ndarray) -> None:
    """w[j] = j! (k-1-j)! / k! for j < k (Shapley weight of a coalition of size j)."""
    if k == 0:
        return
    w[0] = 1.0 / k
    for j in range(k - 1):
        w[j + 1] = w[j] * (j + 1) / (k - 1 - j)


@njit(cache=True)
def _pattern_g(z: np.ndarray, k: int, v: float, b: int, w: np.ndarray, poly: np.ndarray) -> float:
    """G(b) = v * prod_{i not in b} z_i * sum_j w_j e_j(b); G(all bits) is unused and 0."""
    if b == (1 << k) - 1:
        return 0.0
    pz = 1.0
    poly[0] = 1.0
    m = 0
    for i in range(k):
        zi = z[i]
        if (b >> i) & 1:  # multiply the polynomial by (t + z_i)
            poly[m + 1] = poly[m]
            for j in range(m, 0, -1):
                poly[j] = poly[j] * zi + poly[j - 1]
            poly[0] = poly[0] * zi
            m += 1
        else:
            pz *= zi
    s = 0.0
    for j in range(m + 1):
        s += w[j] * poly[j]
    return v * pz * s


@njit(cache=True)
def _leaf_phi_direct(z, k, v, b, w, poly, out):
    """One leaf's contributions for pattern ``b`` without a table (very deep paths).

    phi_p = -G(b) if p is unsatisfied, else G(b without p) with z_p replaced by 1 - z_p.
    """
    neg = -_pattern_g(z, k, v, b, w, poly)
    for p in range(k):
        if (b >> p) & 1:
            bp = b & ~(1 << p)
            # G(bp) carries a factor z_p; recompute it with z_p replaced by (1 - z_p)
            zp = z[p]
            z[p] = 1.0 - zp
            out[p] = _pattern_g(z, k, v, bp, w, poly)
            z[p] = zp
        else:
            out[p] = neg


# How each leaf is explained in the kernel.
_SINGLE, _PAIR, _IN_PAIR, _DIRECT = 0, 1, 2, 3


@njit(cache=True)
def _tabulable(i, leaf_k, leaf_path_start, path_zero, max_table_depth):
    """A leaf gets a table if its path is shallow enough and all cover fractions are > 0."""
    k = leaf_k[i]
    ok = k <= max_table_depth
    for j in range(leaf_path_start[i], leaf_path_start[i] + k):
        ok = ok and path_zero[j] > 0.0
    return ok


@njit(cache=True)
def _table_layout(leaf_k, leaf_path_start, leaf_sibling, path_zero, max_table_depth):
    """Per leaf: its mode and table offset (-1 if none); the last offset is the total size.

    Sibling leaves split on a feature new to the path share one table pair of 2 * 2^k entries
    (P, Q below), which halves the lookups for them; other leaves get 2^k entries of G.
    """
    n = leaf_k.shape[0]
    off = np.full(n + 1, -1, dtype=np.int64)
    mode = np.full(n, _DIRECT, dtype=np.int64)
    total = 0
    for i in range(n):
        if mode[i] == _IN_PAIR or not _tabulable(i, leaf_k, leaf_path_start, path_zero,
                                                  max_table_depth):
            continue
        k = leaf_k[i]
        sib = leaf_sibling[i]
        off[i] = total
        if sib >= 0 and _tabulable(sib, leaf_k, leaf_path_start, path_zero, max_table_depth):
            mode[i] = _PAIR
            mode[sib] = _IN_PAIR
            total += 2 << k
        else:
            mode[i] = _SINGLE
            total += 1 << k
    off[n] = total
    return off, mode


@njit(cache=True)  # serial: tens of ms, and a parallel version costs seconds of compile
def _fill_tables(leaf_k, leaf_value, leaf_path_start, leaf_sibling, path_zero, table_off,
                 leaf_mode, table):
    """G(b) for single leaves; for a sibling pair (left leaf i, right leaf s, last bit q):
    P(b) = G_i(b) + G_s(b ^ q) serves the shared features, Q(b) is both leaves' total
    contribution to the split feature q, where b is the left leaf's pattern."""
    n = leaf_k.shape[0]
    for i in range(n):
        m = leaf_mode[i]
        if m != _SINGLE and m != _PAIR:
            continue
        k = leaf_k[i]
        w = np.empty(k + 1)
        poly = np.empty(k + 2)
        _shapley_weights(k, w)
        z = path_zero[leaf_path_start[i]:leaf_path_start[i] + k]
        base = table_off[i]
        size = 1 << k
        if m == _SINGLE:
            for b in range(size):
                table[base + b] = _pattern_g(z, k, leaf_value[i], b, w, poly)
            continue
        sib = leaf_sibling[i]
        z2 = path_zero[leaf_path_start[sib]:leaf_path_start[sib] + k]
        g1 = np.empty(size)
        g2 = np.empty(size)
        for b in range(size):
            g1[b] = _pattern_g(z, k, leaf_value[i], b, w, poly)
            g2[b] = _pattern_g(z2, k, leaf_value[sib], b, w, poly)
        q = 1 << (k - 1)
        r1 = (1.0 - z[k - 1]) / z[k - 1]
        r2 = (1.0 - z2[k - 1]) / z2[k - 1]
        for b in range(size):
            table[base + b] = g1[b] + g2[b ^ q]
            c = b & ~q
            if b & q:  # row goes left: left leaf satisfied at q, right leaf not
                table[base + size + b] = r1 * g1[c] - g2[c]
            else:
                table[base + size + b] = -g1[c] + r2 * g2[c]


@njit(cache=True, inline="always")
def _cat_goes_left(fval, cat_words, cat_start, cat_len):
    """LightGBM's CategoricalDecision: NaN, negative and unseen codes go right."""
    if math.isnan(fval) or fval <= -1.0 or fval >= 2147483648.0:
        return 0
    c = int(fval)  # truncation, like static_cast<int>
    word = c >> 5
    if word >= cat_len:
        return 0
    return 1 if (cat_words[cat_start + word] >> np.uint32(c & 31)) & np.uint32(1) else 0


@njit(cache=True, inline="always")
def _split_patterns(x, nb, thr, nan_left, zero_left, kind, cat_words, cat_start, cat_len, p_in,
                    p_left, p_right, bit):
    """Children's patterns: clear the split feature's bit on the side the row does not take."""
    if kind == 0:
        for r in range(nb):
            v = x[r]
            g = nan_left if v != v else (zero_left if v == 0.0 else (1 if v <= thr else 0))
            p = p_in[r]
            p_left[r] = p & ~((1 - g) << bit)
            p_right[r] = p & ~(g << bit)
    else:
        for r in range(nb):
            g = _cat_goes_left(x[r], cat_words, cat_start, cat_len)
            p = p_in[r]
            p_left[r] = p & ~((1 - g) << bit)
            p_right[r] = p & ~(g << bit)


@njit(parallel=True, cache=True)
def _explain(X, n_trees, tree_int_start, tree_leaf_start, int_self, int_left, int_right, int_bit,
             int_feature, int_threshold, int_nan_left, int_zero_left, int_kind, int_cat_start,
             int_cat_len, cat_words, leaf_node, leaf_value, leaf_k, leaf_path_start, path_feature,
             path_zero, path_ratio, table_off, leaf_mode, table, max_k, max_nodes, bias, out):
    """Tree-major over row blocks; within a tree, node-major then leaf-major over the block's
    rows so that each leaf's small table stays in L1 while all rows look it up."""
    n, n_feat = X.shape
    n_blocks = (n + _ROW_BLOCK - 1) // _ROW_BLOCK
    for blk in prange(n_blocks):
        r0 = blk * _ROW_BLOCK
        nb = min(n, r0 + _ROW_BLOCK) - r0
        xt = np.empty((n_feat, _ROW_BLOCK))
        for r in range(nb):
            for f in range(n_feat):
                x = X[r0 + r, f]
                # LightGBM's predictor drops |x| <= kZeroThreshold, i.e. reads it as 0
                xt[f, r] = 0.0 if abs(x) <= _K_ZERO else x
        acc = np.zeros((n_feat, _ROW_BLOCK))
        pat = np.empty((max_nodes, _ROW_BLOCK), dtype=np.int64)
        bits = np.empty(_ROW_BLOCK, dtype=np.int32)  # tables exist only for k <= 30
        w = np.empty(max_k + 1)
        poly = np.empty(max_k + 2)
        phi = np.empty(max_k + 1)
        zbuf = np.empty(max_k + 1)
        for t in range(n_trees):
            i0, i1 = tree_int_start[t], tree_int_start[t + 1]
            if i0 == i1:
                continue  # single leaf: only the bias
            pat[0, :nb] = -1  # all path conditions satisfied so far
            for i in range(i0, i1):
                _split_patterns(xt[int_feature[i]], nb, int_threshold[i], int_nan_left[i],
                                int_zero_left[i], int_kind[i], cat_words, int_cat_start[i],
                                int_cat_len[i], pat[int_self[i]], pat[int_left[i]],
                                pat[int_right[i]], int_bit[i])
            for li in range(tree_leaf_start[t], tree_leaf_start[t + 1]):
                mode = leaf_mode[li]
                if mode == _IN_PAIR:
                    continue  # explained with its left sibling
                k = leaf_k[li]
                ps = leaf_path_start[li]
                lp = pat[leaf_node[li]]
                mask = (1 << k) - 1
                off = table_off[li]
                if mode != _DIRECT:
                    for r in range(nb):
                        bits[r] = np.int32(lp[r] & mask)
                    g = table[off:off + mask + 1]
                    shared = k if mode == _SINGLE else k - 1
                    for j in range(shared):
                        a = acc[path_feature[ps + j]]
                        ratio = path_ratio[ps + j]
                        clear = np.int32(~(1 << j))
                        for r in range(nb):
                            b = bits[r]
                            # satisfied: (1-z)/z * G(b without j); unsatisfied: -G(b).
                            # Arithmetic select keeps the loop branch-free; both forms are exact.
                            sat = np.float64((b >> j) & 1)
                            a[r] += (sat * ratio - (1.0 - sat)) * g[b & clear]
                    if mode == _PAIR:
                        a = acc[path_feature[ps + k - 1]]
                        qt = table[off + mask + 1:off + 2 * (mask + 1)]
                        for r in range(nb):
                            a[r] += qt[bits[r]]
                else:
                    _shapley_weights(k, w)
                    zbuf[:k] = path_zero[ps:ps + k]
                    for r in range(nb):
                        _leaf_phi_direct(zbuf, k, leaf_value[li], lp[r] & mask, w, poly, phi)
                        for j in range(k):
                            acc[path_feature[ps + j], r] += phi[j]
        for r in range(nb):
            for f in range(n_feat):
                out[r0 + r, f] = acc[f, r]
            out[r0 + r, n_feat] = bias


@njit(cache=True)
def _binom_weights(m: int) -> np.ndarray:
    """W[a, b] = (a - 1)! b! / (a + b)! for a >= 1: the Shapley weight of a player that must join after
    a - 1 others and before b others among a + b players (W[0, b] unused)."""
    W = np.zeros((m + 2, m + 2))
    for a in range(1, m + 2):
        for b in range(m + 2 - a):
            w = 1.0
            # (a-1)! b! / (a+b)! = 1 / (a * C(a+b, b)) computed as a product
            for t in range(1, b + 1):
                w *= t / (a + t - 1.0 + 1.0)
            W[a, b] = w / a
    return W


@njit(cache=True)
def _local_groups(leaf_k, leaf_path_start, group_of_path):
    """Per path entry its group numbered 0.. within its leaf (order of first appearance), and each
    leaf's number of groups, so the kernel counts per leaf in a few registers."""
    local = np.empty_like(group_of_path)
    ng = np.zeros(leaf_k.shape[0], dtype=np.int64)
    for li in range(leaf_k.shape[0]):
        ps, k = leaf_path_start[li], leaf_k[li]
        for j in range(k):
            local[ps + j] = -1
            for i in range(j):
                if group_of_path[ps + i] == group_of_path[ps + j]:
                    local[ps + j] = local[ps + i]
                    break
            if local[ps + j] < 0:
                local[ps + j] = ng[li]
                ng[li] += 1
    return local, ng


@njit(parallel=True, cache=True)
def _explain_baseline(X, R, n_trees, tree_int_start, tree_leaf_start, int_self, int_left, int_right,
                      int_bit, int_feature, int_threshold, int_nan_left, int_zero_left, int_kind,
                      int_cat_start, int_cat_len, cat_words, leaf_node, leaf_value, leaf_k,
                      leaf_path_start, path_feature, path_group, leaf_ng, W, max_nodes, out):
    """Baseline Shapley (Owen values when features are grouped) of f(x_S, r_not S), rows of X against
    the same rows of R, bias = f(r). A leaf is reached by the hybrid row iff every path feature that
    only x satisfies (set A) is taken from x and every one only r satisfies (set B) from r; the game
    v(S) = value * [A in S, B out of S] has closed-form values, see `baseline_values`."""
    n, n_feat = X.shape
    n_blocks = (n + _ROW_BLOCK - 1) // _ROW_BLOCK
    for blk in prange(n_blocks):
        r0 = blk * _ROW_BLOCK
        nb = min(n, r0 + _ROW_BLOCK) - r0
        xt = np.empty((n_feat, _ROW_BLOCK))
        rt = np.empty((n_feat, _ROW_BLOCK))
        for r in range(nb):
            for f in range(n_feat):
                x = X[r0 + r, f]
                xt[f, r] = 0.0 if abs(x) <= _K_ZERO else x
                x = R[r0 + r, f]
                rt[f, r] = 0.0 if abs(x) <= _K_ZERO else x
        acc = np.zeros((n_feat, _ROW_BLOCK))
        bias = np.zeros(_ROW_BLOCK)
        px = np.empty((max_nodes, _ROW_BLOCK), dtype=np.int64)
        pr = np.empty((max_nodes, _ROW_BLOCK), dtype=np.int64)
        cnt_a = np.zeros(W.shape[0], dtype=np.int64)
        cnt_b = np.zeros(W.shape[0], dtype=np.int64)
        for t in range(n_trees):
            i0, i1 = tree_int_start[t], tree_int_start[t + 1]
            if i0 == i1:
                li = tree_leaf_start[t]
                for r in range(nb):
                    bias[r] += leaf_value[li]
                continue
            px[0, :nb] = -1
            pr[0, :nb] = -1
            for i in range(i0, i1):
                _split_patterns(xt[int_feature[i]], nb, int_threshold[i], int_nan_left[i],
                                int_zero_left[i], int_kind[i], cat_words, int_cat_start[i],
                                int_cat_len[i], px[int_self[i]], px[int_left[i]],
                                px[int_right[i]], int_bit[i])
                _split_patterns(rt[int_feature[i]], nb, int_threshold[i], int_nan_left[i],
                                int_zero_left[i], int_kind[i], cat_words, int_cat_start[i],
                                int_cat_len[i], pr[int_self[i]], pr[int_left[i]],
                                pr[int_right[i]], int_bit[i])
            for li in range(tree_leaf_start[t], tree_leaf_start[t + 1]):
                k = leaf_k[li]
                ps = leaf_path_start[li]
                mask = (1 << k) - 1
                v = leaf_value[li]
                node = leaf_node[li]
                for r in range(nb):
                    bx = px[node, r] & mask
                    br = pr[node, r] & mask
                    if (bx | br) != mask:
                        continue  # a path feature neither row satisfies: no hybrid reaches the leaf
                    if br == mask:
                        bias[r] += v  # r reaches the leaf: part of f(r)
                    a_set = bx & ~br
                    b_set = br & ~bx
                    if (a_set | b_set) == 0:
                        continue
                    # per-group counts of A and B features on the path (groups numbered per leaf)
                    ng = leaf_ng[li]
                    for g in range(ng):
                        cnt_a[g] = 0
                        cnt_b[g] = 0
                    for j in range(k):
                        g = path_group[ps + j]
                        cnt_a[g] += (a_set >> j) & 1
                        cnt_b[g] += (b_set >> j) & 1
                    na = 0
                    nbg = 0
                    nmix = 0
                    for g in range(ng):
                        if cnt_a[g] > 0:
                            if cnt_b[g] > 0:
                                nmix += 1
                            else:
                                na += 1
                        elif cnt_b[g] > 0:
                            nbg += 1
                    if nmix > 1:
                        continue  # two groups each need and forbid at once: never reached
                    # a group's weight among the others: after the pure-A groups, before the pure-B ones
                    w_a, w_b, w_mix = W[na, nbg], W[nbg, na], W[na + 1, nbg]
                    for j in range(k):
                        is_a = (a_set >> j) & 1
                        is_b = (b_set >> j) & 1
                        if is_a == 0 and is_b == 0:
                            continue
                        g = path_group[ps + j]
                        ca, cb = cnt_a[g], cnt_b[g]
                        if ca > 0 and cb > 0:
                            wg = w_mix
                        elif nmix == 1:
                            continue  # another group needs and forbids at once: never reached
                        else:
                            wg = w_a if ca > 0 else w_b
                        if is_a:
                            acc[path_feature[ps + j], r] += v * wg * W[ca, cb]
                        else:
                            acc[path_feature[ps + j], r] -= v * wg * W[cb, ca]
        for r in range(nb):
            for f in range(n_feat):
                out[r0 + r, f] = acc[f, r]
            out[r0 + r, n_feat] = bias[r]


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

DEFAULT_MAX_TABLE_DEPTH = 12  # 2^12 doubles = 32 KiB per leaf; must stay <= 30
DEFAULT_MAX_TABLE_BYTES = 1 << 30


class TreeShap:
    """Precomputed exact TreeSHAP for one LightGBM booster; reuse across chunks.

    ``TreeShap(booster).shap_values(X)`` equals ``booster.predict(X, pred_contrib=True)``.
    Models the kernel cannot explain (multiclass, linear trees) are delegated to
    ``pred_contrib`` with one log line saying why.
    """

    def __init__(self, booster: Any, max_table_depth: int = DEFAULT_MAX_TABLE_DEPTH,
                 max_table_bytes: int = DEFAULT_MAX_TABLE_BYTES):
        self.booster = booster
        self.max_table_depth = min(max_table_depth, 30)  # patterns are int32 in the kernel
        self.max_table_bytes = max_table_bytes
        self.forest: _Forest | None = None
        self.fallback_reason: str | None = None
        self._fitted_trees = -1
        self._warned_sparse = False
        self._fit_lock = threading.Lock()

    def fit(self) -> "TreeShap":
        """Parse the trees and build the pattern tables (idempotent while the model is unchanged). Thread-safe:
        one thread builds, and the forest is published only once its tables are complete."""
        n_trees = self.booster.num_trees()
        if self._fitted_trees == n_trees:
            return self
        with self._fit_lock:
            if self._fitted_trees == n_trees:  # another thread built it meanwhile
                return self
            forest, reason, tables = None, None, (None, None)
            try:
                forest = _parse(self.booster.dump_model(num_iteration=-1), self.booster.num_feature())
            except UnsupportedModel as exc:
                reason = str(exc)
                logger.warning("treeshap: falling back to LightGBM pred_contrib: %s", exc)
            if forest is not None:
                tables = self._build_tables(forest)
            self.forest, self.fallback_reason = forest, reason
            (self.table_off, self.table), self._groups = tables, None  # _groups: (key, numbering) of this forest
            self._fitted_trees = n_trees  # last: a thread that sees it sees everything above
        return self

    def _build_tables(self, fo: _Forest) -> tuple[np.ndarray, np.ndarray]:
        """Tabulate leaves up to the depth that keeps the tables within the memory budget."""
        depth = min(self.max_table_depth, fo.max_k)
        while True:
            off, mode = _table_layout(fo.leaf_k, fo.leaf_path_start, fo.leaf_sibling, fo.path_zero,
                                      depth)
            size = int(off[-1]) * 8
            if size <= self.max_table_bytes or depth == 0:
                break
            depth -= 1
        if depth < fo.max_k:
            logger.info("treeshap: leaves with more than %d distinct path features are computed "
                        "per row (slower) to keep tables under %d bytes", depth, self.max_table_bytes)
        table = np.empty(int(off[-1]), dtype=np.float64)
        with np.errstate(divide="ignore"):
            self.path_ratio = (1.0 - fo.path_zero) / fo.path_zero  # unused where z == 0
        _fill_tables(fo.leaf_k, fo.leaf_value, fo.leaf_path_start, fo.leaf_sibling, fo.path_zero,
                     off, mode, table)
        self.leaf_mode = mode
        return off[:-1].copy(), table

    def shap_values(self, X: Any, num_iteration: int | None = None) -> np.ndarray:
        """SHAP values (n_rows, n_features + 1), bias last; same semantics as pred_contrib."""
        self.fit()
        if self.forest is None:
            return self.booster.predict(X, num_iteration=num_iteration, pred_contrib=True)
        if hasattr(X, "tocsr"):  # scipy.sparse: LightGBM returns sparse contributions
            if not self._warned_sparse:
                logger.warning("treeshap: sparse input delegated to LightGBM pred_contrib")
                self._warned_sparse = True
            return self.booster.predict(X, num_iteration=num_iteration, pred_contrib=True)
        data = to_matrix(X, self.booster)
        fo = self.forest
        if data.shape[1] != fo.n_features:
            raise ValueError(f"X has {data.shape[1]} features, model expects {fo.n_features}")
        n_trees = _trees_to_use(self.booster, num_iteration, len(fo.tree_expected))
        out = np.empty((data.shape[0], fo.n_features + 1), dtype=np.float64)
        if data.shape[0] == 0:
            return out
        bias = float(fo.tree_expected[:n_trees].sum())
        _explain(data, n_trees, fo.tree_int_start, fo.tree_leaf_start, fo.int_self, fo.int_left,
                 fo.int_right, fo.int_bit, fo.int_feature, fo.int_threshold, fo.int_nan_left,
                 fo.int_zero_left, fo.int_kind, fo.int_cat_start, fo.int_cat_len, fo.cat_words,
                 fo.leaf_node, fo.leaf_value, fo.leaf_k, fo.leaf_path_start, fo.path_feature,
                 fo.path_zero, self.path_ratio, self.table_off, self.leaf_mode, self.table,
                 max(fo.max_k, 1),
                 fo.max_nodes, bias, out)
        return out


    def baseline_values(self, X: Any, R: Any, groups: Any = None, num_iteration: int | None = None
                        ) -> np.ndarray:
        """Exact baseline Shapley values of each row of X against the same row of R (n_features + 1).

        The game is v(S) = f(x_S, r_rest) on the raw score, so a row's values add up to
        f(x) - f(r) and the last column is f(r). With `groups` (one integer id per feature) they are
        Owen values: groups play a Shapley game among themselves and features within their group,
        so a group's values add up to its Shapley value in the game of groups."""
        self.fit()
        if self.forest is None:
            raise UnsupportedModel(f"baseline values need the numba kernel ({self.fallback_reason})")
        data, ref = to_matrix(X, self.booster), to_matrix(R, self.booster)
        fo = self.forest
        if data.shape != ref.shape or data.shape[1] != fo.n_features:
            raise ValueError(f"X {data.shape} and R {ref.shape} must both have {fo.n_features} columns "
                             "and the same rows")
        group = np.arange(fo.n_features) if groups is None else np.asarray(groups, dtype=np.int64)
        if group.shape != (fo.n_features,) or (group < 0).any():
            raise ValueError("groups: one non-negative integer per feature")
        n_trees = _trees_to_use(self.booster, num_iteration, len(fo.tree_expected))
        out = np.empty((data.shape[0], fo.n_features + 1), dtype=np.float64)
        if data.shape[0] == 0:
            return out
        key = group.tobytes()
        cached = getattr(self, "_groups", None)  # (key, numbering): one attribute, so threads never see half
        if cached is None or cached[0] != key:  # per-leaf group numbering, once per grouping
            cached = (key, _local_groups(fo.leaf_k, fo.leaf_path_start, group[fo.path_feature]))
            self._groups = cached
        local, n_local = cached[1]
        _explain_baseline(data, ref, n_trees, fo.tree_int_start, fo.tree_leaf_start, fo.int_self,
                          fo.int_left, fo.int_right, fo.int_bit, fo.int_feature, fo.int_threshold,
                          fo.int_nan_left, fo.int_zero_left, fo.int_kind, fo.int_cat_start,
                          fo.int_cat_len, fo.cat_words, fo.leaf_node, fo.leaf_value, fo.leaf_k,
                          fo.leaf_path_start, fo.path_feature, local, n_local,
                          _binom_weights(max(fo.max_k, 1)), fo.max_nodes, out)
        return out


def _trees_to_use(booster: Any, num_iteration: int | None, n_total: int) -> int:
    """Number of leading trees, mirroring Booster.predict's num_iteration/best_iteration rule."""
    if num_iteration is None:
        num_iteration = getattr(booster, "best_iteration", 0) or 0
    if num_iteration <= 0:
        return n_total
    return min(n_total, num_iteration)  # one tree per iteration (single-output models only)


def to_matrix(X: Any, booster: Any) -> np.ndarray:
    """C-contiguous float64 matrix, converting pandas exactly like Booster.predict does."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(X, pd.DataFrame):
        from lightgbm.basic import _data_from_pandas

        X = _data_from_pandas(X, feature_name="auto", categorical_feature="auto",
                              pandas_categorical=booster.pandas_categorical)[0]
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise ValueError("X must be 2-dimensional")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    # read-only arrays (e.g. pandas copy-on-write views) would need a second numba compile
    return arr if arr.flags.writeable else arr.copy()


_CACHE: "weakref.WeakKeyDictionary[Any, TreeShap]" = weakref.WeakKeyDictionary()


_CACHE_LOCK = threading.Lock()


def explainer_for(booster: Any) -> TreeShap:
    """The cached, fitted TreeShap for this booster object (built on first use). Threads sharing one booster
    (Dask workers in one process) share one explainer; `TreeShap.fit` builds it once for all of them."""
    with _CACHE_LOCK:
        ts = _CACHE.get(booster)
        if ts is None:
            # a proxy, so the cached explainer does not keep its key (the booster) alive
            ts = TreeShap(weakref.proxy(booster))
            _CACHE[booster] = ts
    return ts.fit()


def shap_values(booster: Any, X: Any, num_iteration: int | None = None) -> np.ndarray:
    """Exact SHAP values like ``booster.predict(X, pred_contrib=True)``, bias column last."""
    return explainer_for(booster).shap_values(X, num_iteration=num_iteration)
