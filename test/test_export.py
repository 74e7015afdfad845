import onnx
import torch

from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_optimize.export import graph_problems, relative_error
from vit_seg_node.backends.base import create_backend
from vit_seg_node.core.card import load_card
from vit_seg_node.core.processing import normalize, resize_to_input


def test_exported_graph_is_static_and_control_flow_free(tiny_model):
    assert graph_problems(tiny_model) == []
    m = onnx.load(str(tiny_model))
    assert m.opset_import[0].version >= 17
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 96]


def test_onnxruntime_matches_pytorch_on_real_frames(tiny_model, camvid_mini):
    from vit_seg_train.models import create_model

    torch.manual_seed(0)  # the fixture's seed: same weights
    model = create_model('segvit_test', num_classes=11, img_size=(64, 96),
                         decoder='linear').eval()
    card = load_card(tiny_model)
    backend = create_backend(tiny_model, card, threads=1)
    ds = SegmentationDataset(camvid_mini, 'train', cache=False)
    for i in range(2):
        x = normalize(resize_to_input(ds.load(i)[0], card)[0][None], card)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert relative_error(backend.infer(x), ref) < 1e-4
    assert card.extra['export_check']['max_relative_error'] < 1e-4


def test_graph_checker_flags_dynamic_dims(tmp_path):
    x = onnx.helper.make_tensor_value_info('x', onnx.TensorProto.FLOAT, ['N', 3])
    y = onnx.helper.make_tensor_value_info('y', onnx.TensorProto.FLOAT, ['N', 3])
    node = onnx.helper.make_node('Identity', ['x'], ['y'])
    loop = onnx.helper.make_node('If', ['c'], ['z'])
    g = onnx.helper.make_graph([node, loop], 'g', [x], [y])
    p = tmp_path / 'g.onnx'
    onnx.save(onnx.helper.make_model(g), str(p))
    problems = graph_problems(p)
    assert any('dynamic' in s for s in problems) and any('If' in s for s in problems)
