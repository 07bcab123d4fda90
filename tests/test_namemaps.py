"""Maps by pattern (a regular expression, a subtree, a prefix taken off) for layers and parameters, from the command
line and from a model file, and --ignore for layers one side has and the other has not."""

import json

import numpy as np
import pytest

import layerdiff
from layerdiff.errors import AlignmentError
from layerdiff.namemaps import resolve, target

from conftest import one_error_line, write


def test_a_regex_pairs_every_name_it_matches_and_a_subtree_keeps_the_rest():
    a = ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc", "transformer.wte"]
    b = ["blocks.0.fc1", "blocks.1.fc1", "wte"]
    pairs = resolve({r"re:transformer\.h\.(\d+)\.mlp\.c_fc": r"blocks.\1.fc1", "transformer.*": "*"}, {}, a, b, "layer")
    assert pairs == {"transformer.h.0.mlp.c_fc": "blocks.0.fc1", "transformer.h.1.mlp.c_fc": "blocks.1.fc1", "transformer.wte": "wte"}


def test_the_other_files_patterns_pair_from_its_own_names():
    pairs = resolve({}, {"blocks.*": "transformer.h.*"}, ["transformer.h.0.ln_1"], ["blocks.0.ln_1"], "layer")
    assert pairs == {"transformer.h.0.ln_1": "blocks.0.ln_1"}


def test_a_plain_name_wins_over_a_pattern():
    pairs = resolve({"enc.*": "e.*", "enc.fc": "e.head"}, {}, ["enc.fc", "enc.out"], ["e.fc", "e.head", "e.out"], "layer")
    assert pairs == {"enc.fc": "e.head", "enc.out": "e.out"}


def test_a_pattern_that_pairs_nothing_is_an_error():
    with pytest.raises(AlignmentError, match=r"The parameter map entry 'dec\.\*=d\.\*' pairs no parameter"):
        resolve({"dec.*": "d.*"}, {}, ["enc.w"], ["e.w"], "parameter")
    with pytest.raises(AlignmentError, match="is not a regular expression"):
        target("re:(", "x", "y")


class Dense:
    def __init__(self, n_in, n_out, seed):
        rng = np.random.default_rng(seed)
        self.W, self.b = rng.standard_normal((n_in, n_out)), np.zeros(n_out)

    def forward(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward(self, d):
        self.dW, self.db = self.x.T @ d, d.sum(0)
        return d @ self.W.T


class Identity:
    def forward(self, x):
        return x

    def backward(self, d):
        return d


def test_param_and_layer_maps_by_pattern_and_ignore_from_the_api():
    a = {"encoder.fc": Dense(4, 5, 0), "encoder.drop": Identity(), "encoder.out": Dense(5, 5, 1)}
    b = {"fc": Dense(4, 5, 2), "out": Dense(5, 5, 3)}
    result = layerdiff.compare_models(a, b, input_shape=(3, 4), layer_map={"encoder.*": "*"}, param_map={"encoder.*": "*"},
                                      ignore=["*.drop"])
    assert result.match, str(result)
    assert result.comparison.only_a == [] and [w.how for w in result.links] == ["map"] * 4


def test_ignore_and_map_patterns_from_the_command_line(cli, tmp_path):
    net = (
        "import numpy as np\n"
        "class D:\n"
        "    def __init__(self, s): self.W = np.random.default_rng(s).standard_normal((4, 4)); self.b = np.zeros(4)\n"
        "    def forward(self, x): self.x = x; return x @ self.W + self.b\n"
        "    def backward(self, d): self.dW, self.db = self.x.T @ d, d.sum(0); return d @ self.W.T\n"
        "class I:\n"
        "    def forward(self, x): return x\n"
        "    def backward(self, d): return d\n"
    )
    write(tmp_path, "a.py", net + "model = {'block.0.fc': D(0), 'block.0.skip': I(), 'block.1.fc': D(1)}\ninput_shape = (3, 4)\n")
    write(tmp_path, "b.py", net + "model = {'l0': D(2), 'l1': D(3)}\n")
    code, out, err = cli("run", "a.py", "b.py", "--json", "--ignore", "*.skip", "--map", r"re:block\.(\d)\.fc=l\1",
                         "--param-map", r"re:block\.(\d)\.fc\.(\w+)=l\1.\2")
    assert code == 0, err
    report = json.loads(out)
    assert [(l["layer_a"], l["layer_b"]) for l in report["layers"]] == [("block.0.fc", "l0"), ("block.1.fc", "l1")]
    assert report["only_a"] == []
    code, _, err = cli("run", "a.py", "b.py", "--ignore", "*")
    assert code == 2 and "--ignore * leaves no layer of a.py to compare" in one_error_line(err)
