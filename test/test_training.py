import json
import os
from pathlib import Path
import signal
import subprocess
import tarfile
import sys
import time

from typing import Optional

import numpy as np
import pytest
from safetensors.torch import load_file
import torch
import yaml

from vit_seg_node.core.card import CAMVID_CLASSES
from vit_seg_train.config import load_config
from vit_seg_train.checkpoint import load_state_dict
from vit_seg_train.ema import ema_decay, update_average
from vit_seg_node.core.errors import UserError
from vit_seg_node.core.datasets import DatasetError, find_split, SegmentationDataset
from vit_seg_train.sampling import class_presence, rcs_order, rcs_probabilities
from vit_seg_train.train import epoch_batches, train
from vit_seg_train.transforms import TrainTransform

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / 'training' / 'configs' / 'test_tiny.yaml'


def tiny_config(tmp_path: Path, data: Optional[dict] = None, **train_overrides) -> Path:
    cfg = yaml.safe_load(TINY.read_text())
    cfg['output_dir'] = str(tmp_path / 'run')
    cfg['data']['root'] = str(ROOT / 'test' / 'data' / 'camvid_mini')
    cfg['data'].update(data or {})
    cfg['train'].update(train_overrides)
    p = tmp_path / 'cfg.yaml'
    p.write_text(yaml.safe_dump(cfg))
    return p


def losses(run: Path) -> list[float]:
    rows = (run / 'metrics.csv').read_text().splitlines()[1:]
    return [float(r.split(',')[2]) for r in rows if r.split(',')[2]]


def test_loss_decreases_over_30_steps(tmp_path):
    summary = train(str(tiny_config(tmp_path, log_every=1, max_steps=30)))
    assert summary['steps'] == 30
    ls = losses(tmp_path / 'run')
    assert len(ls) == 30
    assert sum(ls[-5:]) / 5 < 0.8 * sum(ls[:5]) / 5
    saved = load_config(tmp_path / 'run' / 'config.yaml')
    assert saved['resolved'] and len(saved['data']['class_weights']) == 11


@pytest.mark.parametrize('data, extra', [
    (None, {}), ({'rare_class_sampling': {'temperature': 0.05}}, {}),
    ({'copy_paste': {'classes': ['Pole', 'Car', 'Pedestrian'], 'prob': 0.7}}, {}),
    ({'pipeline': 'device', 'jitter': 0.3,
      'copy_paste': {'classes': ['Pole', 'Car'], 'prob': 0.7}}, {}),
    (None, {'ema': {'decay': 0.9}})],
    ids=['uniform', 'rare_class_sampling', 'copy_paste', 'device_pipeline', 'weight_average'])
def test_killed_and_resumed_run_is_bit_identical(tmp_path, data, extra):
    ref_dir, kill_dir = tmp_path / 'ref', tmp_path / 'kill'
    ref_dir.mkdir()
    kill_dir.mkdir()
    overrides = dict(max_steps=40, checkpoint_every=3, log_every=1, **extra)
    train(str(tiny_config(ref_dir, data, **overrides)))
    cfg = tiny_config(kill_dir, data, **overrides)
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    cmd = [sys.executable, '-m', 'vit_seg_train.train', '--config', str(cfg)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = kill_dir / 'run' / 'last.pt'
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (kill_dir / 'run' / 'summary.json').exists(), 'run finished before the kill'
    killed_at = torch.load(last, weights_only=True)['step']
    assert 0 < killed_at < 40
    r = subprocess.run(cmd + ['--resume'], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a = torch.load(ref_dir / 'run' / 'last.pt', weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a['step'] == b['step'] == 40
    for k in a['model']:
        assert torch.equal(a['model'][k], b['model'][k]), k
    for (sa, sb) in zip(a['optimizer']['state'].values(), b['optimizer']['state'].values()):
        assert torch.equal(sa['exp_avg'], sb['exp_avg'])
    assert ('ema' in a) == ('ema' in b) == bool(extra)
    for k in a.get('ema', {}):
        assert torch.equal(a['ema'][k], b['ema'][k]), k


def test_weight_average_moves_floats_and_copies_counters():
    live, avg = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        live.weight.fill_(3.0)
        live.running_mean.fill_(1.0)
    live.num_batches_tracked.fill_(7)
    update_average(avg, live, 0.75)
    assert torch.allclose(avg.weight, torch.full((3,), 0.75 * 1.0 + 0.25 * 3.0))
    assert torch.allclose(avg.running_mean, torch.full((3,), 0.25))
    assert int(avg.num_batches_tracked) == 7
    assert ema_decay(0.999, 0) == pytest.approx(0.1) and ema_decay(0.999, 10 ** 6) == 0.999


def test_run_with_weight_average_selects_and_saves_the_average(tmp_path):
    # 7 frames, batches of 2: 3 steps an epoch, one evaluation at the end of epoch 1 (step 6)
    train(str(tiny_config(tmp_path, epochs=2, max_steps=0, eval_every=2,
                          ema={'decay': 0.8})))
    last = torch.load(tmp_path / 'run' / 'last.pt', weights_only=True)
    best = load_file(tmp_path / 'run' / 'best.safetensors')
    assert last['step'] == 6 and set(best) == set(last['ema'])
    for k, v in best.items():
        assert torch.equal(v, last['ema'][k]), k
    assert any(not torch.equal(last['model'][k], last['ema'][k])
               for k in best if last['model'][k].is_floating_point())
    rows = (tmp_path / 'run' / 'metrics.csv').read_text().splitlines()
    assert rows[0].endswith(',val_miou_live')
    scored = [r.split(',') for r in rows[1:] if r.split(',')[4]]
    assert len(scored) == 1 and 0.0 <= float(scored[0][-1]) <= 1.0   # the live weights' score
    assert all(torch.equal(v, load_state_dict(tmp_path / 'run' / 'last.pt')[k].to(v.dtype))
               for k, v in best.items())   # last.pt reads as the weights the run evaluates
    for i, bad in enumerate([{'decay': 1.5}, {}, {'decay': 'x'}]):
        (tmp_path / f'bad{i}').mkdir()
        with pytest.raises(UserError, match='train.ema'):
            train(str(tiny_config(tmp_path / f'bad{i}', epochs=1, ema=bad)))


def test_fresh_run_refuses_to_overwrite(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=2)
    train(str(cfg))
    with pytest.raises(Exception, match='--resume'):
        train(str(cfg))


def test_epoch_order_and_augmentation_are_seeded(camvid_mini):
    a = epoch_batches(7, 2, seed=3, epoch=5)
    assert a == epoch_batches(7, 2, seed=3, epoch=5)
    assert a != epoch_batches(7, 2, seed=3, epoch=6)
    shards = [epoch_batches(7, 1, 3, 5, world=2, rank=r) for r in (0, 1)]
    assert not set(sum(shards[0], [])) & set(sum(shards[1], []))
    t = TrainTransform(crop=(64, 96), mean=[0.5] * 3, std=[0.5] * 3, ignore_index=11, seed=1)
    ds = SegmentationDataset(camvid_mini, 'train', t)
    x1, y1 = ds[(2, 1)]
    x2, y2 = ds[(2, 1)]
    x3, _ = ds[(3, 1)]
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert x1.shape == (3, 64, 96) and y1.shape == (64, 96)


def test_dataset_errors(tmp_path, camvid_mini):
    with pytest.raises(DatasetError, match='not found'):
        find_split(tmp_path / 'none', 'val')
    (tmp_path / 'val').mkdir()
    (tmp_path / 'valannot').mkdir()
    with pytest.raises(DatasetError, match='empty'):
        find_split(tmp_path, 'val')
    import shutil
    src = sorted((camvid_mini / 'val').iterdir())[0]
    shutil.copy(src, tmp_path / 'val' / 'a.png')
    shutil.copy(src, tmp_path / 'valannot' / 'b.png')
    with pytest.raises(DatasetError, match='do not match'):
        find_split(tmp_path, 'val')


def test_distributed_data_parallel_with_torchrun(tmp_path):
    # torchrun, two processes, gloo on CPU: the same code path as multi-GPU (NCCL) training
    cfg = tiny_config(tmp_path, max_steps=4)
    torchrun = Path(sys.executable).parent / 'torchrun'
    r = subprocess.run([str(torchrun), '--standalone', '--nproc_per_node', '2', '-m',
                        'vit_seg_train.train', '--config', str(cfg)], cwd=ROOT,
                       env={**os.environ, 'PYTHONPATH': str(ROOT)}, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    summaries = [ln for ln in r.stdout.splitlines() if ln.startswith('{"best_val_miou"')]
    assert len(summaries) == 2                      # one per rank
    ck = torch.load(tmp_path / 'run' / 'last.pt', weights_only=True)
    assert ck['step'] == 4                          # global steps, not per-rank


def test_checkpoint_loads_at_another_input_size(tmp_path):
    from vit_seg_train.checkpoint import load_model

    train(str(tiny_config(tmp_path, max_steps=2)))
    ck = tmp_path / 'run' / 'last.pt'
    same, cfg = load_model(ck)
    again, _ = load_model(ck, img_size=(64, 96))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(same(x), again(x))
        big, cfg2 = load_model(ck, img_size=(96, 160))   # 6 x 10 grid instead of 4 x 6
        assert big.encoder.pos_embed.shape[1] == 1 + 60
        assert big(torch.randn(1, 3, 96, 160)).shape == (1, 11, 96, 160)
    assert cfg2['model']['img_size'] == [96, 160]


def test_eval_cli_errors_are_one_line_exit_2(tmp_path, camvid_mini):
    import shutil

    (tmp_path / 'empty' / 'val').mkdir(parents=True)
    (tmp_path / 'empty' / 'valannot').mkdir()
    mism = tmp_path / 'mism'
    (mism / 'val').mkdir(parents=True)
    (mism / 'valannot').mkdir()
    src = sorted((camvid_mini / 'val').iterdir())[0]
    shutil.copy(src, mism / 'val' / 'a.png')
    shutil.copy(src, mism / 'valannot' / 'b.png')
    for data, msg in ((tmp_path / 'missing', 'not found'), (tmp_path / 'empty', 'empty'),
                      (mism, 'do not match')):
        r = subprocess.run([sys.executable, '-m', 'vit_seg_node.cli', 'eval', '--data', str(data),
                            '--split', 'val', '--json', str(tmp_path / 'o.json')],
                           capture_output=True, text=True, timeout=120)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and msg in lines[0], r.stderr


def test_decoder_adaptation_under_fake_quantization(tmp_path):
    from safetensors.torch import load_file

    from vit_seg_train.config import build_model
    from vit_seg_train.fakequant import FakeQuantLinear

    cfg = tiny_config(tmp_path, max_steps=8, eval_every=1, trainable='decoder',
                      fake_quant={'calibrator': 'minmax', 'frames': 2})
    doc = yaml.safe_load(cfg.read_text())
    doc['train']['epochs'] = 2
    cfg.write_text(yaml.safe_dump(doc))
    summary = train(str(cfg))
    assert summary['steps'] > 0 and 0 <= summary['best_val_miou'] <= 1
    run = tmp_path / 'run'
    ck = torch.load(run / 'last.pt', weights_only=True)['model']
    scales = [v for k, v in ck.items() if k.endswith('act_scale')]
    assert scales and all(float(s) > 0 for s in scales)   # calibrated, saved for resume
    # the exported weights are the float model's: they load into a plain model, strictly
    model = build_model(load_config(run / 'config.yaml'))
    model.load_state_dict(load_file(run / 'best.safetensors'), strict=True)
    assert not any(isinstance(m, FakeQuantLinear) for m in model.modules())


def test_self_distillation_from_the_unreduced_model(tmp_path):
    from vit_seg_train.train import distillation_loss

    x = torch.randn(2, 11, 4, 6)
    assert float(distillation_loss(x, x, {'weight': 1.0})) < 1e-6
    assert float(distillation_loss(x, torch.randn(2, 11, 4, 6), {'weight': 1.0})) > 0.1
    (tmp_path / 'a').mkdir()
    first = tiny_config(tmp_path / 'a', max_steps=4)
    train(str(first))
    cfg = tiny_config(tmp_path, max_steps=4, log_every=1,
                      init_from=str(tmp_path / 'a' / 'run' / 'last.pt'),
                      distill={'weight': 1.0, 'temperature': 2.0})
    doc = yaml.safe_load(cfg.read_text())
    doc['model']['reduction'] = {'policy': 'neighbor', 'ratio': 0.3, 'locations': [1, 2]}
    cfg.write_text(yaml.safe_dump(doc))
    assert train(str(cfg))['steps'] == 4


def test_publish_writes_fp16_weights_that_rebuild(tmp_path):
    from safetensors.torch import load_file

    from vit_seg_train.checkpoint import load_model
    from vit_seg_train.publish import main as publish_main

    cfg = tiny_config(tmp_path, max_steps=3, eval_every=1)
    doc = yaml.safe_load(cfg.read_text())
    doc['train']['epochs'] = 1
    cfg.write_text(yaml.safe_dump(doc))
    train(str(cfg))
    assert publish_main([str(tmp_path / 'run'), str(tmp_path / 'ref')]) == 0
    weights = load_file(tmp_path / 'ref' / 'model.safetensors')
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    model, _ = load_model(tmp_path / 'ref' / 'model.safetensors')
    assert next(model.parameters()).dtype == torch.float32
    assert publish_main([str(tmp_path / 'missing'), str(tmp_path / 'x')]) == 2
    # the published weights evaluate, also under INT8 fake quantization
    from vit_seg_node.cli import main

    rep = tmp_path / 'fq.json'
    assert main(['eval', '--checkpoint', str(tmp_path / 'ref' / 'model.safetensors'), '--data',
                 str(ROOT / 'test' / 'data' / 'camvid_mini'), '--fake-quant', '2', '--json',
                 str(rep)]) == 0
    assert json.loads(rep.read_text())['fake_quant_calibration_frames'] == 2


def test_resume_from_a_truncated_checkpoint_is_one_line(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=2)
    train(str(cfg))
    last = tmp_path / 'run' / 'last.pt'
    last.write_bytes(last.read_bytes()[:1000])
    r = subprocess.run([sys.executable, '-m', 'vit_seg_node.cli', 'train', '--config', str(cfg),
                        '--resume'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert 'cannot resume' in r.stderr and 'Traceback' not in r.stderr


def test_gpu_training_script_probes_plans_and_collects(tmp_path):
    """The script kept ready for a lent GPU, run here on the CPU with the tiny config."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg['train'].update(eval_every=1, batch_size=2)
    cfg['data']['train_split'] = 'fit'
    cfg['data']['val_split'] = 'heldout'
    (tmp_path / 'tiny.yaml').write_text(yaml.safe_dump(cfg))
    out = tmp_path / 'out'
    r = subprocess.run([sys.executable, str(ROOT / 'experiments' / 'gpu_train.py'),
                        '--run', f'tiny={tmp_path / "tiny.yaml"}',
                        '--run', f'hyb={tmp_path / "tiny.yaml"}',
                        '--set', 'hyb:model={name: segvit_hybrid_test, img_size: [64, 96], '
                        'stem: hybrid, decoder: skip}', '--set', 'hyb:data.pipeline=device',
                        '--data', str(ROOT / 'test' / 'data' / 'camvid_mini'), '--budget', '4',
                        '--probe-steps', '3', '--min-epochs', '2', '--workers', '0',
                        '--out', str(out)], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ['records.tar.gz', 'weights_0.safetensors']
    with tarfile.open(out / 'records.tar.gz') as tar:
        names = set(tar.getnames())
        saved = yaml.safe_load(tar.extractfile('hyb/config.yaml').read())
    for run in ('tiny', 'hyb'):
        for f in ('config.yaml', 'metrics.csv', 'best.json', 'summary.json', 'train.log'):
            assert f'{run}/{f}' in names, (run, f)
    assert 2 <= saved['train']['epochs'] <= 1000   # planned from the probe's real speed
    assert saved['data']['val_split'] == 'heldout' and saved['data']['pipeline'] == 'device'
    assert saved['model']['name'] == 'segvit_hybrid_test'
    weights = load_file(str(out / 'weights_0.safetensors'))
    assert {k.split('/')[0] for k in weights} == {'tiny', 'hyb'}


def test_distillation_from_a_cnn_teacher_of_another_architecture(tmp_path):
    from vit_seg_train.models.peers import _OutLogits
    from vit_seg_train.train import build_teacher

    (tmp_path / 't').mkdir()
    teacher_cfg = tiny_config(tmp_path / 't', max_steps=2)
    cfg = yaml.safe_load(teacher_cfg.read_text())
    cfg['model'] = {'name': 'lraspp_mobilenet_v3_large', 'img_size': [64, 96]}
    teacher_cfg.write_text(yaml.safe_dump(cfg))
    train(str(teacher_cfg))
    teacher_ckpt = tmp_path / 't' / 'run' / 'last.pt'
    (tmp_path / 's').mkdir()
    student_cfg = tiny_config(tmp_path / 's', max_steps=2,
                              distill={'teacher': str(teacher_ckpt), 'weight': 1.0,
                                       'temperature': 2.0})
    cfg = load_config(student_cfg)
    assert isinstance(build_teacher(cfg, 'cpu'), _OutLogits)   # the CNN, not a ViT copy
    train(str(student_cfg))
    assert (tmp_path / 's' / 'run' / 'last.pt').is_file()


def test_rare_class_sampling_draws_rare_classes_more_often():
    # frames 0-7 show classes 0 and 1 (common); frame 8 alone shows class 2 (rare)
    labels = [np.array([[0, 1], [0, 1]], np.uint8)] * 8 + [np.array([[0, 2], [0, 0]], np.uint8)]
    presence = class_presence(labels, 4)
    assert presence[8].tolist() == [True, False, True, False] and not presence[:, 3].any()
    freq = np.array([0.6, 0.35, 0.05, 0.0])
    probs = rcs_probabilities(freq, 0.1)
    assert probs.sum() == pytest.approx(1.0) and probs[3] == 0.0
    assert probs[2] > probs[1] > probs[0]
    order = rcs_order(presence, probs, 900, seed=0, epoch=3)
    assert order == rcs_order(presence, probs, 900, seed=0, epoch=3)
    assert order != rcs_order(presence, probs, 900, seed=0, epoch=4)
    # uniform sampling would give frame 8 one draw in 9; class 2 is drawn with p ~ 0.95
    share = order.count(8) / len(order)
    assert share > 0.5
    with pytest.raises(ValueError):
        rcs_probabilities(freq, 0.0)


def test_rare_class_sampling_is_resolved_into_the_config(tmp_path):
    cfg = tiny_config(tmp_path, {'rare_class_sampling': {'temperature': 0.05}}, max_steps=2)
    train(str(cfg))
    saved = load_config(tmp_path / 'run' / 'config.yaml')
    probs = saved['data']['rare_class_sampling']['class_probs']
    assert len(probs) == 11 and sum(probs) == pytest.approx(1.0, abs=1e-4)


def test_segformer_peer_without_transformers_is_one_user_error(monkeypatch):
    from vit_seg_node.core.errors import UserError
    from vit_seg_train.models.registry import create_model

    monkeypatch.setitem(sys.modules, 'transformers', None)   # import fails as if not installed
    with pytest.raises(UserError, match='pip install transformers'):
        create_model('segformer_b0', num_classes=11)


def test_segformer_peer_gives_logits_at_the_input_size():
    pytest.importorskip('transformers')   # optional dependency of the SegFormer-B0 peer
    from vit_seg_train.models.registry import create_model

    model = create_model('segformer_b0', num_classes=11).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, 11, 64, 96)


def test_vit_trains_on_crops_smaller_than_its_input(tmp_path):
    """Small crops train the ViT with resampled position embeddings; the weights rebuild static."""
    from vit_seg_train.checkpoint import load_model

    summary = train(str(tiny_config(tmp_path, {'crop': [32, 64]}, max_steps=3)))
    assert summary['steps'] == 3
    ck = tmp_path / 'run' / 'last.pt'
    static, cfg = load_model(ck)
    assert cfg['data']['crop'] == [32, 64] and cfg['model']['img_size'] == [64, 96]
    assert not static.encoder.dynamic_img_size and static.encoder.pos_embed.shape[1] == 1 + 24
    from vit_seg_train.config import build_model

    dynamic = build_model(cfg, dynamic_img_size=True).eval()
    dynamic.load_state_dict(static.state_dict())
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 96)
        torch.testing.assert_close(dynamic(x), static(x))
        assert dynamic(torch.randn(1, 3, 32, 64)).shape == (1, 11, 32, 64)
    odd = tmp_path / 'odd'
    odd.mkdir()
    with pytest.raises(UserError, match='multiple of the patch size'):
        train(str(tiny_config(odd, {'crop': [40, 64]}, max_steps=1)))


def test_logit_adjustment_moves_decisions_toward_rare_classes():
    from experiments.logit_adjustment import adjusted_labels, class_prior

    labels = [np.array([[0, 0, 0, 1], [0, 0, 0, 255]], np.uint8)]
    prior = class_prior(labels, 2)
    assert np.allclose(prior, [6 / 7, 1 / 7])           # the ignored pixel left out
    logits = np.zeros((2, 1, 1), np.float32)
    logits[0] = 1.0                                      # the frequent class wins by 1
    assert adjusted_labels(logits, prior, 0.0)[0, 0] == 0
    # log(6/7) - log(1/7) = log 6 = 1.79: tau 1 outweighs a margin of 1, tau 0.5 does not
    assert adjusted_labels(logits, prior, 1.0)[0, 0] == 1
    assert adjusted_labels(logits, prior, 0.5)[0, 0] == 0


def test_seed_spread_means_and_bad_reports(tmp_path, capsys):
    from experiments.seed_spread import main

    def report(name, miou, pole):
        p = tmp_path / name
        ious = dict.fromkeys(CAMVID_CLASSES, 0.5)
        ious['Pole'] = pole
        p.write_text(json.dumps({'miou': miou, 'per_class_iou': ious}))
        return str(p)

    out = tmp_path / 'seeds.json'
    assert main(['--group', 'cnn', report('c0', 0.42, 0.1), report('c1', 0.40, 0.3),
                 '--group', 'vit', report('v0', 0.43, 0.2), '--out', str(out)]) == 0
    s = json.loads(out.read_text())
    assert s['cnn']['spread']['miou'] == pytest.approx({'mean': 0.41, 'min': 0.40, 'max': 0.42})
    assert s['cnn']['spread']['Pole']['mean'] == pytest.approx(0.2)
    assert s['vit']['miou_mean_minus_first'] == pytest.approx(0.02)
    assert '0.4200 / 0.4000' in capsys.readouterr().out
    assert main(['--group', 'cnn', str(tmp_path / 'missing.json'), '--out', str(out)]) == 2
    assert main(['--group', 'cnn', '--out', str(tmp_path / 'x.json')]) == 2
    assert 'no report' in capsys.readouterr().err and not (tmp_path / 'x.json').exists()


def test_copy_paste_pastes_exactly_the_chosen_classes():
    from vit_seg_train.copy_paste import class_ids, paste

    img, lbl = np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5), np.uint8)
    src_img = np.full((4, 5, 3), 200, np.uint8)
    src_lbl = np.array([[2, 2, 0, 9, 9]] * 4, np.uint8)
    out_img, out_lbl = paste(img, lbl, src_img, src_lbl, [2, 9])
    assert (out_lbl == np.array([[2, 2, 0, 9, 9]] * 4)).all()
    assert (out_img[:, [0, 1, 3, 4]] == 200).all() and (out_img[:, 2] == 0).all()
    assert (img == 0).all() and (lbl == 0).all()          # the inputs are not modified
    assert paste(img, lbl, src_img, src_lbl, [5])[1] is lbl   # nothing to paste: no copy
    assert class_ids(['Pole', 'Sky', 2], CAMVID_CLASSES) == [0, 2]
    with pytest.raises(ValueError, match='unknown class'):
        class_ids(['Lamp'], CAMVID_CLASSES)


def test_copy_paste_transform_is_seeded_and_off_means_unchanged(camvid_mini):
    base = dict(crop=(64, 96), mean=[0.5] * 3, std=[0.5] * 3, ignore_index=11, seed=1)
    plain = SegmentationDataset(camvid_mini, 'train', TrainTransform(**base))
    t_off = TrainTransform(**base, paste_ids=[0, 8], paste_prob=0.0)
    t_on = TrainTransform(**base, paste_ids=list(range(11)), paste_prob=1.0)
    off = SegmentationDataset(camvid_mini, 'train', t_off)
    on = SegmentationDataset(camvid_mini, 'train', t_on)
    for t, ds in ((t_off, off), (t_on, on)):
        t.source, t.num_frames = ds.load, len(ds)
    for key in ((0, 0), (3, 1)):
        assert all(torch.equal(a, b) for a, b in zip(plain[key], off[key]))
        x1, y1 = on[key]
        x2, y2 = on[key]
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        # every class pasted: the label is the source's wherever the source has a class
        assert not torch.equal(y1, plain[key][1])


def test_copy_paste_config_errors_are_one_user_error(tmp_path):
    cases = (({'classes': ['Lamp']}, 'unknown class'),
             ({'classes': ['Pole'], 'prob': 2}, r'\[0, 1\]'),
             ({'prob': 0.5}, 'needs'))
    for i, (spec, message) in enumerate(cases):
        (tmp_path / str(i)).mkdir()
        cfg = tiny_config(tmp_path / str(i), {'copy_paste': spec}, max_steps=1)
        with pytest.raises(UserError, match=message):
            train(str(cfg))
