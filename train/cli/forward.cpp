// mamba-train forward: run a HuggingFace Mamba checkpoint on token ids and write logits, the last hidden state
// and optionally the next-token loss and every parameter's gradient to HDF5 (for parity checks against the
// reference implementation).
#include <cstdio>

#include "autograd/autograd.h"
#include "nn/hf_io.h"
#include "train/ckpt/hdf5_io.h"
#include "train/cli/commands.h"
#include "train/ids_file.h"

namespace mt::train {

Runner add_forward_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("forward", "Run a HuggingFace Mamba checkpoint on token ids; write HDF5 outputs");
  struct Opts {
    std::string hf, ids, out, device = "cpu", dtype = "f32";
    bool grads = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--hf", o->hf, "directory with config.json and model.safetensors")->required();
  cmd->add_option("--input-ids", o->ids, "text file: one sequence of token ids per line")->required();
  cmd->add_option("--out", o->out, "output HDF5 file")->required();
  cmd->add_flag("--grads", o->grads, "also write the next-token loss and grad/<name> for every parameter");
  cmd->add_option("--device", o->device, "cpu | cuda | cuda:N | auto")->capture_default_str();
  cmd->add_option("--dtype", o->dtype,
                  "compute dtype: f32 | bf16 | f16 | f64 (f64 needs an f64 checkpoint or "
                  "converts it)")
      ->capture_default_str();
  return [o]() {
    const Device dev = resolve_device(o->device);
    const DType cd = dtype_from_name(o->dtype);
    MT_CHECK(is_floating(cd), ErrorKind::Usage, "--dtype must be a float dtype, got ", o->dtype);
    auto model = nn::load_hf_model(o->hf, /*keep_f64=*/cd == DType::F64);
    if (cd == DType::F64) model->to(DType::F64);
    model->to(dev);
    const MambaConfig& cfg = model->config();
    Tensor ids = read_ids_file(o->ids, cfg.vocab_size).to(dev);
    nn::ForwardOptions fo;
    fo.compute_dtype = cd;
    std::vector<std::pair<std::string, Tensor>> out;
    if (!o->grads) {
      NoGradGuard ng;
      nn::LMOutput r = model->forward(ids, fo);
      out.emplace_back("logits", r.logits.to(DType::F32));
      out.emplace_back("last_hidden_state", r.backbone.last_hidden_state.to(DType::F32));
    } else {
      nn::LMOutput r = model->forward(ids, fo, /*with_loss=*/true);
      out.emplace_back("logits", r.logits.detach().to(DType::F32));
      out.emplace_back("last_hidden_state", r.backbone.last_hidden_state.detach().to(DType::F32));
      backward(r.loss);
      out.emplace_back("loss", r.loss.detach().to(DType::F32));
      for (auto& np : model->named_parameters()) {
        Tensor g = grad(*np.second);
        if (!g.defined()) g = Tensor::zeros(np.second->shape(), DType::F32, np.second->device());
        out.emplace_back("grad/" + np.first, g.to(DType::F32));
      }
    }
    write_h5(o->out, out);
    std::printf("wrote %s: logits [%lld, %lld, %lld]%s\n", o->out.c_str(), (long long)ids.size(0),
                (long long)ids.size(1), (long long)cfg.vocab_size, o->grads ? ", loss and gradients" : "");
    return 0;
  };
}

}  // namespace mt::train
