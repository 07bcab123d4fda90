"""Hugging Face models as their users build them, from a config (nothing downloaded), with no lines beyond building
them and their inputs: GPT-2 against itself, with one activation changed, and against the project's own port;
a BERT classifier that returns its own loss; a model left in training mode refused before any comparison."""

import pytest

import layerdiff

from conftest import FIXTURES, expected, one_error_line, write

pytest.importorskip("transformers")  # in the test extra: pip install -e '.[test]'
FORMS = FIXTURES / "forms"


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf")
    pairs = {
        "self": ("hf_gpt2.py", "hf_gpt2_ref.py"),
        "act": ("bug_hf_gpt2_mlp_act.py", "hf_gpt2_ref.py"),
        "port": ("gpt2_port.py", "hf_gpt2.py"),
        "bert": ("hf_bert_cls.py", "hf_bert_cls_ref.py"),
    }
    return {k: layerdiff.run(FORMS / a, FORMS / b, out=out / k).json() for k, (a, b) in pairs.items()}


def test_gpt2_from_a_config_against_itself_matches(reports):
    report = reports["self"]
    assert report["match"] is True and report["culprits"] == []
    assert "input_ids (2, 12) int64, attention_mask (2, 12) bool" in " ".join(report["feed"])
    assert report["layers"][-1]["layer_a"] == "lm_head"  # the logits of the ModelOutput, not its cache


def test_gpt2_with_one_mlp_activation_changed_names_that_activation_and_nothing_else(reports):
    want = expected(FORMS / "bug_hf_gpt2_mlp_act.py")
    culprits = reports["act"]["culprits"]
    assert {c["layer_a"] for c in culprits} == {want["layer"]}
    assert culprits[0]["pass"] == want["pass"]


def test_gpt2_against_the_projects_port_matches_after_the_conv1d_weights_are_transposed(reports):
    report = reports["port"]
    assert report["match"] is True and report["culprits"] == []
    links = {w["a"]: w for w in report["weights"]["links"]}
    # nn.Linear's (out, in) into Hugging Face's Conv1D (in, out): the layout table, not the shapes, says so.
    assert links["blocks.0.attn.c_proj.weight"]["b"] == "transformer.h.0.attn.c_proj.weight"
    assert links["blocks.0.attn.c_proj.weight"]["transpose"] == (1, 0)
    pairs = {(l["layer_a"], l["layer_b"]) for l in report["layers"]}
    assert ("blocks.1.mlp.c_fc", "transformer.h.1.mlp.c_fc") in pairs  # paired by the file's pattern map


def test_a_model_that_returns_its_own_loss_is_compared_through_it(reports):
    report = reports["bert"]
    assert report["match"] is True
    loss = next(l for l in report["layers"] if l["layer_a"] == "loss")
    assert loss["kind_a"] == "BertForSequenceClassification.loss"
    assert [t["shape_a"] for t in loss["tensors"] if t["key"] == "input"] == [[2, 3]]  # the logits


def test_a_model_left_in_training_mode_is_refused_naming_its_dropouts(cli, tmp_path):
    write(tmp_path, "train.py", (
        "from transformers import GPT2Config, GPT2Model\n"
        "model = GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=8, vocab_size=20))\n"
        "inputs = {'input_ids': [[1, 2, 3]]}\n"
    ))
    code, _, err = cli("run", "train.py", "train.py")
    assert code == 2
    line = one_error_line(err)
    assert "is in training mode with dropout active (drop, h.0.attn.attn_dropout" in line and "model.eval()" in line


def test_a_structured_output_can_be_named(cli, tmp_path):
    write(tmp_path, "named.py", (
        "import torch\n"
        "class Two(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.a, self.b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 4)\n"
        "    def forward(self, x): return {'first': self.a(x), 'second': self.b(x)}\n"
        "model = Two()\ninput_shape = (2, 3)\noutput = 'second'\n"
    ))
    write(tmp_path, "wrong.py", (tmp_path / "named.py").read_text().replace("output = 'second'", "output = 'third'"))
    code, out, err = cli("run", "named.py", "named.py", "--json")
    assert code == 0, err
    code, _, err = cli("run", "wrong.py", "wrong.py")
    assert code == 2 and "output = 'third' in wrong.py, but the model's output has: ['first', 'second']" in one_error_line(err)


def test_the_readme_hugging_face_model_file_runs_as_it_stands(cli, tmp_path):
    from test_readme import code_after

    write(tmp_path, "hf.py", code_after("A Hugging Face model needs no more than", "python"))
    code, out, err = cli("run", "hf.py", "hf.py")
    assert code == 0, out + err
