"""Regression tests for model cards, ladders and numeric arguments: one row per fault, tables.

Card and ladder: one schema each, checked where the file is loaded, so that every reader gets
the same one line naming the key. Command line: every number range-checked before any work,
one line and exit code 2, nothing written and nothing lost.
"""

from __future__ import annotations

import collections
import shutil

import pytest
import yaml

from vit_seg_node.cli import main
from vit_seg_node.core.card import load_card, ModelCardError
from vit_seg_node.core.errors import UserError
from vit_seg_node.core.ladder import LadderController, load_ladder, MAX_RUNGS
from vit_seg_node.core.schema import shorten


def card_doc(tiny_model) -> dict:
    return yaml.safe_load(tiny_model.with_suffix('.card.yaml').read_text())


def tuned(**kw):
    return lambda d: d['precision'].update(tuned=kw)


# mutation of the tiny model's card -> the key the refusal names
CARD_CASES = {
    'tuned threads 100000': (tuned(threads=100000, spinning=True),
                             r'precision\.tuned\.threads: must be an integer in 0\.\.256'),
    'tuned threads 1.5': (tuned(threads=1.5, spinning=True), r'precision\.tuned\.threads'),
    'tuned threads true': (tuned(threads=True, spinning=True), r'precision\.tuned\.threads'),
    'tuned without spinning': (tuned(threads=2), r'precision\.tuned\.spinning: missing'),
    'tuned spinning a string': (tuned(threads=2, spinning='yes'), r'precision\.tuned\.spinning'),
    'tuned 5': (lambda d: d['precision'].update(tuned=5), r'precision\.tuned: must be a mapping'),
    'tuned a list': (lambda d: d['precision'].update(tuned=[1, 2]), r'precision\.tuned: must'),
    'output a list': (lambda d: d.update(output=[]), r'output: must be a mapping'),
    'output null': (lambda d: d.update(output=None), r'output: must be a mapping'),
    'output a string': (lambda d: d.update(output='labels'), r'output: must be a mapping'),
    'output without kind': (lambda d: d['output'].pop('kind'), r'output\.kind: missing'),
    'output kind unknown': (lambda d: d['output'].update(kind='probs'), r'output\.kind: must'),
    '300 palette entries': (lambda d: d.update(palette=[[0, 0, i % 256] for i in range(300)]),
                            r'palette: must'),
    'palette shorter': (lambda d: d.update(palette=d['palette'][:3]), r'palette: must have one'),
    'palette value 256': (lambda d: d['palette'].__setitem__(0, [0, 256, 0]),
                          r'palette\[0\]\[1\]: must be an integer in 0\.\.255'),
    'classes a string': (lambda d: d.update(classes='SkyRoad'), r'classes: must be a list'),
    'classes twice': (lambda d: d['classes'].__setitem__(1, d['classes'][0]), r'classes: must '
                      r'be distinct'),
    'mean nan': (lambda d: d['input'].update(mean=[float('nan'), 0.4, 0.4]),
                 r'input\.mean\[0\]: must be a finite number'),
    'mean inf': (lambda d: d['input'].update(mean=[0.4, float('inf'), 0.4]),
                 r'input\.mean\[1\]: must be a finite number'),
    'std inf': (lambda d: d['input'].update(std=[0.2, 0.2, float('inf')]), r'input\.std\[2\]'),
    'std 0': (lambda d: d['input'].update(std=[0.2, 0.0, 0.2]), r'input\.std\[1\]'),
    'mean of two': (lambda d: d['input'].update(mean=[0.4, 0.4]), r'input\.mean: must have 3'),
    'height a string': (lambda d: d['input'].update(height='352'), r'input\.height: must be an'),
    'height 100000': (lambda d: d['input'].update(height=100000), r'input\.height'),
    'unknown precision': (lambda d: d['precision'].update(default='int3'),
                          r'precision\.default: must be one of'),
    'precision a list': (lambda d: d.update(precision=['fp32']), r'precision: must be a mapping'),
    'reduction a string': (lambda d: d.update(reduction='tome'), r'reduction: must be a mapping'),
    'metrics a list': (lambda d: d.update(metrics=[1]), r'metrics: must be a mapping'),
    'ignore index -1': (lambda d: d.update(ignore_index=-1), r'ignore_index: must be'),
    'a misspelt key': (lambda d: d.update(pallete=[]), r'pallete: unknown key'),
    'name of 10 KB': (lambda d: d.update(name='x' * 10000), r'name: must be a non-empty string'
                      r'.*\.\.\. \(10002 characters\)'),
    'not a mapping': (lambda d: d.clear() or d.update({'format': ['x']}), r'format: must be'),
}


@pytest.mark.parametrize('case', sorted(CARD_CASES))
def test_card_schema_refuses_naming_the_key(case, tiny_model, tmp_path):
    mutate, message = CARD_CASES[case]
    doc = card_doc(tiny_model)
    mutate(doc)
    shutil.copy(tiny_model, tmp_path / 'm.onnx')
    (tmp_path / 'm.card.yaml').write_text(yaml.safe_dump(doc))
    with pytest.raises(ModelCardError, match=message) as exc:
        load_card(tmp_path / 'm.onnx')
    text = str(exc.value)
    assert '\n' not in text and len(text) < 400, text


def test_card_schema_accepts_every_card_in_the_tree():
    from conftest import ROOT

    cards = list((ROOT / 'vit_seg_node' / 'data' / 'models').glob('*.card.yaml')) + \
        list((ROOT / 'docs').rglob('*.card.yaml'))
    assert len(cards) >= 3
    for c in cards:
        load_card(c.with_name(c.name.replace('.card.yaml', '.onnx')))


def test_duplicate_yaml_keys_are_refused(tiny_model, tmp_path):
    shutil.copy(tiny_model, tmp_path / 'm.onnx')
    card = tmp_path / 'm.card.yaml'
    card.write_text(tiny_model.with_suffix('.card.yaml').read_text() + 'name: again\n')
    with pytest.raises(ModelCardError, match=r"m\.card\.yaml: duplicate key 'name'"):
        load_card(tmp_path / 'm.onnx')
    ladder = tmp_path / 'x.ladder.yaml'
    ladder.write_text('rungs: [m.onnx]\nrungs: [m.onnx, m.onnx]\n')
    with pytest.raises(UserError, match="duplicate key 'rungs'"):
        load_ladder(ladder)


# ------------------------------------------------------------------------------ ladders
LADDER_CASES = {
    'rungs missing': ('other: [m.onnx]\n', r'unknown key'),
    'rungs empty': ('rungs: []\n', r'rungs: must have 1\.\.8 items'),
    'rungs a string': ('rungs: m.onnx\n', r'rungs: must be a list'),
    'a rung a number': ('rungs: [m.onnx, 5]\n', r'rungs\[1\]: must be a non-empty string'),
    'a rung empty': ("rungs: [m.onnx, '']\n", r'rungs\[1\]'),
    'too many rungs': ('rungs: [' + ', '.join(['m.onnx'] * (MAX_RUNGS + 1)) + ']\n',
                       rf'rungs: must have 1\.\.{MAX_RUNGS} items, has {MAX_RUNGS + 1}'),
    'a missing model': ('rungs: [m.onnx, none.onnx]\n', r'models not found'),
    'not a mapping': ('- m.onnx\n', r'model ladder: must be a mapping'),
}


@pytest.mark.parametrize('case', sorted(LADDER_CASES))
def test_ladder_schema_refuses_naming_the_key(case, tiny_model, tmp_path):
    text, message = LADDER_CASES[case]
    shutil.copy(tiny_model, tmp_path / 'm.onnx')
    path = tmp_path / 'x.ladder.yaml'
    path.write_text(text)
    with pytest.raises(UserError, match=message) as exc:
        load_ladder(path)
    assert '\n' not in str(exc.value) and str(path) in str(exc.value)


def test_a_rung_listed_twice_is_loaded_once(tiny_model, tmp_path):
    for n in ('a', 'b'):
        shutil.copy(tiny_model, tmp_path / f'{n}.onnx')
    path = tmp_path / 'x.ladder.yaml'
    path.write_text('rungs: [a.onnx, b.onnx, a.onnx, ./b.onnx, a.onnx]\n')
    said = []
    assert load_ladder(path, said.append) == [tmp_path / 'a.onnx', tmp_path / 'b.onnx']
    assert len(said) == 1 and '3 rung(s) listed twice' in said[0]


def test_a_failing_rung_is_left_and_never_chosen_again():
    c = LadderController([70.0, 40.0, 20.0], budget_ms=10000.0)
    c.rung = 1
    assert not c.fail(1, 'E: x', 0.0) and not c.fail(1, 'E: x', 0.1)
    c.observe(30.0, 0.2)              # a success in between: failures counted in a row
    assert not c.fail(1, 'E: x', 0.3) and not c.fail(1, 'E: x', 0.4)
    assert c.fail(1, 'E: x', 0.5)     # the third in a row: left, for the faster rung
    assert c.rung == 2 and c.failed == {1: 'E: x'}
    for k in range(50):               # a generous budget: up again, over the failed rung
        c.observe(10.0, 2.0 + 0.1 * k)
    assert c.rung == 0
    c.set_budget(0.0, 10.0)
    assert c.rung == 0
    for t in range(3):                # rung 0 fails: budget 0 now means the best working one
        c.fail(0, 'E: y', 11.0 + t)
    assert c.rung == 2 and c.decide(20.0) == 2
    for t in range(5):                # the last working rung is never left
        assert not c.fail(2, 'E: z', 30.0 + t)
    assert c.rung == 2


def test_shorten_cuts_long_values():
    assert shorten('x' * 10000).endswith('... (10002 characters)')
    assert len(shorten('x' * 10000)) < 100
    assert shorten('rgb8') == "'rgb8'"


# ------------------------------------------------------------------------------ command line
@pytest.fixture()
def ws(tmp_path, tiny_model, camvid_mini):
    """Return a tiny model, copies with broken cards, a frame, and a report not to lose."""
    w = collections.namedtuple('WS', 'root model image data threads kind md')
    shutil.copy(tiny_model, tmp_path / 'm.onnx')
    shutil.copy(tiny_model.with_suffix('.card.yaml'), tmp_path / 'm.card.yaml')
    for name, mutate in (('threads', tuned(threads=100000, spinning=True)),
                         ('kind', lambda d: d['output'].update(kind='labels'))):
        shutil.copy(tiny_model, tmp_path / f'{name}.onnx')
        doc = card_doc(tiny_model)
        mutate(doc)
        (tmp_path / f'{name}.card.yaml').write_text(yaml.safe_dump(doc))
    (tmp_path / 'r.md').write_text('a report that must survive\n')
    (tmp_path / 'q.md').mkdir()
    image = next((camvid_mini / 'val').glob('*.png'))
    return w(tmp_path, tmp_path / 'm.onnx', image, camvid_mini, tmp_path / 'threads.onnx',
             tmp_path / 'kind.onnx', tmp_path / 'r.md')


def infer(w, model, *more):
    return ['infer', '--model', model, '--image', w.image, '--out', w.root / 'o.png', *more]


def bench_node(*more):
    return lambda w: ['bench-node', '--frames', w.data, *more]


def regimes(*more):
    return lambda w: ['regimes', '--model', w.model, '--regimes', 'hot', *more]


def tune(*more):
    return lambda w: ['tune', '--model', w.model, '--data', w.data, '--out', w.root / 't',
                      *more]


CLI_CASES = {
    'card tuned threads 100000': lambda w: infer(w, w.threads),
    'card kind labels, model logits': lambda w: infer(w, w.kind),
    'infer --threads 100000': lambda w: infer(w, w.model, '--threads', '100000'),
    'infer --threads -1': lambda w: infer(w, w.model, '--threads', '-1'),
    'infer --alpha nan': lambda w: infer(w, w.model, '--alpha', 'nan'),
    'eval --limit 0': lambda w: ['eval', '--model', w.model, '--data', w.data, '--limit', '0'],
    'eval --threads 100000': lambda w: ['eval', '--model', w.model, '--data', w.data,
                                        '--threads', '100000'],
    'bench-node --runs 0': bench_node('--runs', '0'),
    'bench-node --gap -1': bench_node('--gap', '-1'),
    'bench-node --gap nan': bench_node('--gap', 'nan'),
    'bench-node --gap inf': bench_node('--gap', 'inf'),
    'bench-node --domain-id -1': bench_node('--domain-id', '-1'),
    'bench-node --domain-id 300': bench_node('--domain-id', '300'),
    'bench-node --threads 100000': bench_node('--threads', '100000'),
    'bench-node with a bad card': lambda w: ['bench-node', '--frames', w.data, '--model',
                                             w.threads],
    'demo --limit 0': lambda w: ['demo', '--limit', '0', '--out', w.root / 'demo'],
    'demo --domain-id 300': lambda w: ['demo', '--domain-id', '300', '--out', w.root / 'demo'],
    'replay --rate 0': lambda w: ['replay', '--bag', w.root, '--rate', '0', '--json',
                                  w.root / 'r.json'],
    'replay --budget-ms -5': lambda w: ['replay', '--bag', w.root, '--budget-ms', '-5',
                                        '--json', w.root / 'r.json'],
    'make-bag --limit 0': lambda w: ['make-bag', '--images', w.data / 'val', '--out',
                                     w.root / 'bag', '--limit', '0'],
    'regimes --runs 0': regimes('--runs', '0', '--json', 'x.json'),
    'regimes --runs -3': regimes('--runs', '-3', '--json', 'x.json'),
    'regimes --warmup -1': regimes('--warmup', '-1', '--json', 'x.json'),
    'regimes --repeats 0': regimes('--repeats', '0', '--json', 'x.json'),
    'regimes --repeats 101': regimes('--repeats', '101', '--json', 'x.json'),
    'regimes --json a folder': lambda w: regimes('--runs', '1', '--json', w.root)(w),
    'regimes --json r.md': lambda w: regimes('--runs', '1', '--json', w.md)(w),
    'regimes --json, its table a folder': lambda w: regimes('--runs', '1', '--json',
                                                            w.root / 'q.json')(w),
    'tune --limit 0': tune('--limit', '0'),
    'tune --limit -2': tune('--limit', '-2'),
    'tune --pairs 0': tune('--pairs', '0'),
    'tune --budget nan': tune('--budget', 'nan'),
    'tune --budget -1': tune('--budget', '-1'),
    'tune --budget 2': tune('--budget', '2'),
    'sensitivity --pairs 0': lambda w: ['sensitivity', '--model', w.model, '--data', w.data,
                                        '--json', w.root / 's.json', '--pairs', '0'],
    'export --opset 99': lambda w: ['export', '--checkpoint', w.model, '--out', w.root / 'e.onnx',
                                    '--frames', w.data, '--opset', '99'],
    'export --batch 0': lambda w: ['export', '--checkpoint', w.model, '--out', w.root / 'e.onnx',
                                   '--frames', w.data, '--batch', '0'],
    'export --batch 17': lambda w: ['export', '--checkpoint', w.model, '--out',
                                    w.root / 'e.onnx', '--frames', w.data, '--batch', '17'],
    'quantize --num-calib 0': lambda w: ['quantize', '--model', w.model, '--out',
                                         w.root / 'q.onnx', '--num-calib', '0'],
}


@pytest.mark.parametrize('case', sorted(CLI_CASES))
def test_cli_numbers_and_cards_one_line_exit_2_nothing_lost(case, ws, capsys):
    argv = [str(a) for a in CLI_CASES[case](ws)]
    before = {p: p.read_bytes() if p.is_file() else None for p in ws.root.rglob('*')}
    assert main(argv) == 2, case
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('vit-seg') and 'Traceback' not in err[0], err
    assert len(err[0]) < 400, err
    after = {p: p.read_bytes() if p.is_file() else None for p in ws.root.rglob('*')}
    assert after == before, f'{case} changed {sorted(set(after) ^ set(before))}'


def test_a_10_kb_encoding_is_cut_in_the_warning():
    from vit_seg_node.ros.convert import FrameError, image_to_rgb

    class Raw:
        encoding, height, width, step, data = 'x' * 10000, 2, 2, 6, b'\0' * 12

    with pytest.raises(FrameError) as exc:
        image_to_rgb(Raw())
    assert exc.value.reason == 'encoding' and len(str(exc.value)) < 200
