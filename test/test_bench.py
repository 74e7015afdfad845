"""The benchmark harness on a tiny grid (tiny model, three variants)."""

import json
from pathlib import Path

import pytest
import yaml

from vit_seg_node.core.card import CAMVID_CLASSES
from vit_seg_optimize import bench
from vit_seg_optimize.report import pareto_front
from vit_seg_train.train import train

ROOT = Path(__file__).resolve().parent.parent
# the machine probes, injected: the real ones (a 1024^3 GEMM, a 256 MB copy) are for real runs
FAKE_PROBES = bench.Probes(gemm_peak=lambda threads, precision: {'fp32': 100.0, 'int8': 400.0}[
    precision], memory_bandwidth=lambda: 12.5)


def test_tiny_grid_writes_table_json_csv_plot(tmp_path, camvid_mini, monkeypatch):
    monkeypatch.setattr(bench, 'Probes', lambda: FAKE_PROBES)
    cfg = yaml.safe_load((ROOT / 'training/configs/test_tiny.yaml').read_text())
    cfg.update(output_dir=str(tmp_path / 'run'))
    cfg['data']['root'] = str(camvid_mini)
    cfg['train'].update(max_steps=3)
    (tmp_path / 'train.yaml').write_text(yaml.safe_dump(cfg))
    train(str(tmp_path / 'train.yaml'))
    cfg.update(output_dir=str(tmp_path / 'peer'))   # a peer architecture, same data and recipe
    cfg['model'] = {'name': 'lraspp_mobilenet_v3_large', 'img_size': [64, 96]}
    (tmp_path / 'peer.yaml').write_text(yaml.safe_dump(cfg))
    train(str(tmp_path / 'peer.yaml'))
    grid = {'checkpoint': str(tmp_path / 'run' / 'last.pt'), 'data': str(camvid_mini),
            'split': 'val', 'threads': 1, 'warmup': 1, 'runs': 3, 'limit': 2,
            'timing_passes': 2,
            'regimes': {'regimes': ['hot', 'cold'], 'threads': [1, '2-nospin'], 'runs': 2,
                        'warmup': 1},
            'workdir': str(tmp_path / 'models'),
            'variants': [
                 {'name': 'base', 'baseline': True},
                 {'name': 'int8', 'precision': 'int8'},
                 {'name': 'nb', 'reduction': {'policy': 'neighbor', 'window_first': 0.5,
                                              'ratio': 0.3, 'locations': [1, 2]}},
                 {'name': 'peer', 'checkpoint': str(tmp_path / 'peer' / 'last.pt')}]}
    (tmp_path / 'bench.yaml').write_text(yaml.safe_dump(grid))
    out = tmp_path / 'out'
    bench.run_bench(tmp_path / 'bench.yaml', out)
    for f in ('results.json', 'results.csv', 'results.md', 'pareto.png'):
        assert (out / f).stat().st_size > 0, f
    doc = json.loads((out / 'results.json').read_text())
    assert {'cpu', 'cores', 'threads', 'onnxruntime', 'gemm_peak_gflops'} <= set(doc['machine'])
    assert doc['machine']['memory_copy_gbs'] == {'before': 12.5, 'after': 12.5}
    assert doc['machine']['gemm_peak_gflops'] == {'fp32': 100.0, 'int8': 400.0}
    vs = {v['name']: v for v in doc['variants']}
    assert vs['base']['baseline'] and not vs['nb']['baseline']
    assert vs['base']['policy'] == 'none' and vs['nb']['policy'] == 'neighbor'
    assert vs['int8']['precision'] == 'int8'
    for v in vs.values():
        for k in ('params', 'macs', 'flops', 'latency_ms', 'fps', 'miou', 'speedup_vs_baseline',
                  'miou_drop_vs_baseline', 'onnx', 'budget'):
            assert k in v, k
        assert set(v['latency_ms']) == {'p50', 'p90', 'p99'}
        assert 0.0 <= v['miou'] <= 1.0 and v['flops'] == 2 * v['macs']
    assert vs['base']['speedup_vs_baseline'] == 1.0
    assert vs['nb']['flops'] < vs['base']['flops']
    assert (out / 'pareto.png').read_bytes()[:4] == b'\x89PNG'
    for v in vs.values():   # per-class IoU in the JSON and in the Markdown
        assert list(v['per_class_iou']) == CAMVID_CLASSES
    assert 'Per-class IoU' in (out / 'results.md').read_text()
    # every variant in every regime at its best thread setting; speed-ups over the baseline's best
    assert doc['regimes']['regimes'] == ['hot', 'cold']
    assert doc['regimes']['threads'] == ['1', '2-nospin']
    for v in vs.values():
        cells = doc['regimes']['models'][v['onnx']]
        assert set(cells) == {'hot/1', 'hot/2-nospin', 'cold/1', 'cold/2-nospin'}
        for g in ('hot', 'cold'):
            best = v['regimes'][g]
            assert best['p50'] == min(cells[f'{g}/1']['p50'], cells[f'{g}/2-nospin']['p50'])
            assert cells[f'{g}/{best["threads"]}']['p50'] == best['p50']
            assert best['speedup_vs_baseline'] == pytest.approx(
                vs['base']['regimes'][g]['p50'] / best['p50'])
    assert vs['base']['regimes']['cold']['speedup_vs_baseline'] == 1.0
    md = (out / 'results.md').read_text()
    assert 'Latency by regime' in md and 'cold ms (threads)' in md
    assert 'cold_p50_ms' in (out / 'results.csv').read_text().splitlines()[0]
    # the peer: its own model in the table, compared per regime with the reference's variants
    assert vs['peer']['model'] == 'lraspp_mobilenet_v3_large' and vs['peer']['policy'] == 'none'
    assert vs['base']['model'] == vs['nb']['model'] != vs['peer']['model']
    assert '| peer | lraspp_mobilenet_v3_large | fp32 |' in md
    peers = md.split('Against the peers')[1].split('Per-class IoU')[0]
    assert '| cold | ' in peers and f'peer: {vs["peer"]["regimes"]["cold"]["p50"]:.1f} ms' in peers
    # the recorded deviation is the one the two passes' latencies give
    rep = doc['reproducibility']
    again = rep['second_pass_p50_ms']
    assert set(again) == set(vs)
    dev = max(abs((again['base'] / again[n]) / vs[n]['speedup_vs_baseline'] - 1) for n in vs)
    assert abs(rep['max_speedup_ratio_deviation'] - dev) < 1e-9
    for v in vs.values():   # roofline fraction against the injected peaks
        peak = 400.0 if v['precision'] == 'int8' else 100.0
        assert abs(v['roofline_fraction'] - v['achieved_gflops'] / peak) < 1e-9
    # re-timing the finished run later: same models, ratios compared with the committed ones
    from vit_seg_node.cli import main

    assert main(['bench', '--retime', str(out / 'results.json'), '--out', str(out)]) == 0
    assert main(['bench', '--retime', str(out / 'results.json'), '--out', str(out)]) == 0
    history = json.loads((out / 'retime.json').read_text())
    assert len(history) == 2 and set(history[-1]['variants']) == set(vs)
    assert history[-1]['variants']['base']['speedup'] == 1.0
    devs = sorted(abs(r['deviation']) for r in history[-1]['variants'].values())
    assert history[-1]['max_abs_deviation'] == devs[-1]
    assert history[-1]['median_abs_deviation'] == devs[len(devs) // 2]
    assert history[-1]['memory_copy_gbs']['now'] == {'before': 12.5, 'after': 12.5}
    assert history[-1]['machine']['cpu']   # the machine of the re-timing, recorded
    assert (history[-1]['warmup'], history[-1]['runs']) == (1, 3)   # the committed run's
    # a model overwritten since the run (another grid in the same workdir) is refused, not timed
    from vit_seg_node.core.errors import UserError
    from vit_seg_optimize.bench import retime

    victim = Path(doc['variants'][-1]['onnx'])
    victim.write_bytes(Path(doc['variants'][0]['onnx']).read_bytes() + b'\0')
    with pytest.raises(UserError, match='differ from the ones this run timed'):
        retime(out / 'results.json')


def test_bench_config_refuses_an_unknown_regime(tmp_path):
    from vit_seg_node.core.errors import UserError

    grid = {'variants': [{'name': 'base', 'baseline': True}], 'regimes': {'regimes': ['warm']}}
    (tmp_path / 'b.yaml').write_text(yaml.safe_dump(grid))
    with pytest.raises(UserError, match="unknown regime 'warm'"):
        bench.BenchConfig.load(tmp_path / 'b.yaml')
    grid['regimes'] = {'threads': [4]}
    (tmp_path / 'b.yaml').write_text(yaml.safe_dump(grid))
    with pytest.raises(UserError, match='unknown thread setting 4'):
        bench.BenchConfig.load(tmp_path / 'b.yaml')


@pytest.mark.parametrize('text, message', [
    ('```bash\nmake bench\n```\n', 'cannot read benchmark config'),
    ('- a\n- b\n', 'must be a mapping'),
    ('variants: 3\n', 'non-empty list'),
    ('variants: [base]\n', 'mapping with a name'),
    ('variants: [{name: a, baseline: true}, {name: a}]\n', 'unique: a'),
    ('variants: [{name: a}, {name: b}]\n', 'exactly one variant'),
])
def test_bad_bench_config_is_one_line_and_exit_2(tmp_path, capsys, text, message):
    from vit_seg_node.cli import main

    (tmp_path / 'b.yaml').write_text(text)
    assert main(['bench', '--config', str(tmp_path / 'b.yaml'), '--out',
                 str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / 'out').exists()


def test_peers_table_picks_the_fastest_variant_within_the_drop():
    from vit_seg_optimize.report import peers_table

    def v(name, model, policy, lat, miou, baseline=False):
        return {'name': name, 'model': model, 'policy': policy, 'miou': miou,
                'baseline': baseline, 'latency_ms': {'p50': lat}}
    doc = {'split': 'heldout', 'variants': [
        v('base', 'vit', 'none', 60, 0.400, True), v('nb', 'vit', 'neighbor', 20, 0.392),
        v('nb2', 'vit', 'neighbor', 15, 0.385), v('cnn', 'cnn', 'none', 18, 0.42),
        v('cnn8', 'cnn', 'none', 17, 0.41)]}
    md = peers_table(doc)
    row = [line for line in md.splitlines() if line.startswith('| hot')][0]
    assert row == '| hot | nb: 20.0 ms, 0.3920 | cnn8: 17.0 ms, 0.4100 |'   # nb2 drops 1.5 pts
    assert peers_table({'split': 's', 'variants': doc['variants'][:3]}) == ''


def test_pareto_front():
    pts = [(10, 0.5), (20, 0.6), (15, 0.4), (30, 0.55)]
    assert pareto_front(pts) == [0, 1]


def test_matched_latency_compares_within_the_band_and_precision():
    from vit_seg_optimize.report import matched_latency_table

    def v(name, policy, lat, miou, precision='fp32'):
        return {'name': name, 'policy': policy, 'precision': precision, 'miou': miou,
                'latency_ms': {'p50': lat}}
    doc = {'variants': [v('base', 'none', 80, 0.60), v('nb', 'neighbor', 40, 0.59),
                        v('w', 'window', 41, 0.58), v('w2', 'window', 39, 0.595),
                        v('e', 'evit', 50, 0.60), v('w8', 'window', 40, 0.60, 'int8')]}
    md = matched_latency_table(doc)
    row = [line for line in md.splitlines() if line.startswith('| nb')][0]
    assert 'w2: 39.0 ms, 0.5950' in row       # the better window variant in the band
    assert '| -- |' in row                     # EViT at 50 ms is out of the band
    assert row.endswith('| no |')              # w2 beats it
    assert 'w8' not in md                      # other precision


def test_regimes_time_every_model_in_every_cell(tiny_model, tmp_path):
    from vit_seg_node.cli import main
    from vit_seg_optimize.regimes import markdown

    out = tmp_path / 'reg.json'
    assert main(['regimes', '--model', str(tiny_model), '--model', str(tiny_model),
                 '--runs', '3', '--warmup', '1', '--threads', '1', '2-runspin', '2-nospin',
                 '--json', str(out)]) == 0
    doc = json.loads(out.read_text())
    cells = {f'{r}/{t}' for r in ('hot', 'cold', 'loaded') for t in ('1', '2-runspin', '2-nospin')}
    for name, row in doc['models'].items():
        assert set(row) == cells
        assert all(0 < v['p50'] <= v['p90'] for v in row.values())
    assert out.with_suffix('.md').read_text() == markdown(doc)
    assert main(['regimes', '--model', str(tiny_model), '--runs', '3', '--warmup', '1',
                 '--threads', '1', '--regimes', 'hot', 'loaded', '--repeats', '3',
                 '--json', str(out)]) == 0
    doc = json.loads(out.read_text())
    for cell in doc['models'][str(tiny_model)].values():   # the median of 3 draws, all 3 kept
        assert len(cell['p50_repeats']) == 3 and cell['p50'] == sorted(cell['p50_repeats'])[1]
    assert 'median p50 of 3 repeats' in out.with_suffix('.md').read_text()
    assert main(['regimes', '--model', str(tmp_path / 'missing.onnx'), '--json',
                 str(out)]) == 2
    (tmp_path / 'notes.onnx').write_text('not a model')
    out.unlink()
    assert main(['regimes', '--model', str(tmp_path / 'notes.onnx'), '--json', str(out)]) == 2
    assert not out.exists()


def test_gemm_peak_builds_and_times_both_kernels():
    from vit_seg_optimize.measure import gemm_peak

    for precision in ('fp32', 'int8'):
        assert gemm_peak(1, precision, shapes=((8, 16, 8), (16, 16, 16)), runs=2) > 0


@pytest.mark.parametrize('record', ['docs/results/results.json',
                                    'docs/results/heldout_bench/results.json'])
def test_committed_grids_have_physical_roofline_fractions(record):
    """Every committed grid's roofline fractions are at most 1 and match its recorded peaks.

    The peaks are measured with the kernels the models use, so each fraction is the row's
    throughput over its precision's peak.
    """
    doc = json.loads((ROOT / record).read_text())
    peaks = doc['machine']['gemm_peak_gflops']
    for v in doc['variants']:
        if v.get('roofline_fraction') is None:
            continue
        assert 0 < v['roofline_fraction'] <= 1, v['name']
        peak = peaks['fp32' if v['precision'] in ('fp32', 'fp16') else 'int8']
        assert abs(v['roofline_fraction'] - v['achieved_gflops'] / peak) < 1e-6, v['name']


def test_regime_settings_configure_the_pool_as_named(tiny_model):
    """``2``: ONNX Runtime's default pool; ``2-runspin``: as the node's backend; ``2-nospin``."""
    from vit_seg_node.backends.onnxruntime_backend import make_session
    from vit_seg_optimize.regimes import SETTINGS
    from vit_seg_optimize.tune import TUNE_THREADS

    def entry(setting, key):
        opts = make_session(tiny_model, **SETTINGS[setting]).get_session_options()
        try:
            return opts.get_session_config_entry(key)
        except RuntimeError:    # not set: ONNX Runtime's default
            return None

    assert entry('2', 'session.force_spinning_stop') is None
    assert entry('2', 'session.intra_op.allow_spinning') is None
    assert entry('2-runspin', 'session.force_spinning_stop') == '1'
    assert entry('2-nospin', 'session.intra_op.allow_spinning') == '0'
    assert all(SETTINGS[s]['threads'] == int(s.split('-')[0]) for s in SETTINGS)
    assert '2' not in TUNE_THREADS      # tune times only what the node's backend can run
