// HDF5 side of checkpoints: in-memory file images (core driver, no backing store) in the layout documented in
// train/ckpt/checkpoint.h, and the checked reader of verified images.
//
// HDF5 discipline (docs/DESIGN.md F3, F5): H5dont_atexit() before any other HDF5 call, plugin loading off, automatic
// error printing off (per thread: this libhdf5 is built thread-safe, where the error stack is thread-local), and
// every HDF5 call of this file under one mutex. HDF5 never touches the disk here, so ENOSPC / EIO can only come from
// our own checked writes. Callbacks into our code never throw (they collect, then we act).
#include "train/ckpt/checkpoint_h5.h"

#include <hdf5.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstring>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include "core/error.h"

namespace mt::train {

namespace {

std::mutex g_h5_mutex;

// Serialises HDF5 use and sets up the library on first use.
struct H5Session {
  std::lock_guard<std::mutex> lock{g_h5_mutex};
  H5Session() {
    static std::once_flag once;
    std::call_once(once, [] {
      H5dont_atexit();           // must precede every other HDF5 call (it only sets a flag)
      H5PLset_loading_state(0);  // never dlopen filter plugins named by a file
    });
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
};

// Owns one hid_t.
class H5Obj {
 public:
  H5Obj(hid_t id, herr_t (*closer)(hid_t)) : id_(id), closer_(closer) {}
  H5Obj(const H5Obj&) = delete;
  H5Obj& operator=(const H5Obj&) = delete;
  ~H5Obj() {
    if (id_ >= 0) closer_(id_);
  }
  operator hid_t() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*closer_)(hid_t);
};

herr_t collect_error(unsigned, const H5E_error2_t* e, void* out) {
  try {
    auto* v = static_cast<std::vector<std::string>*>(out);
    if (e && e->desc && *e->desc) v->push_back(e->desc);
  } catch (...) {
  }
  return 0;
}

// The innermost and outermost messages of the current HDF5 error stack ("unable to open file: file signature ...").
std::string h5_error_text() {
  std::vector<std::string> msgs;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_error, &msgs);
  H5Eclear2(H5E_DEFAULT);
  if (msgs.empty()) return "unknown HDF5 error";
  if (msgs.size() == 1 || msgs.back() == msgs.front()) return msgs.front();
  return msgs.back() + ": " + msgs.front();
}

[[noreturn]] void fail(const std::string& what) { throw Error(ErrorKind::Checkpoint, what); }
[[noreturn]] void h5_fail(const std::string& what) { fail(what + " (HDF5: " + h5_error_text() + ")"); }

std::string unique_image_name() {
  static std::atomic<uint64_t> counter{0};
  return str("mt-ckpt-image-", ::getpid(), "-", counter.fetch_add(1), ".h5");
}

// ---------------------------------------------------------------- writing

// Names are '/'-separated paths: no empty / "." / ".." component, no NUL, and no name is a group prefix of another.
void validate_names(const char* kind, const std::vector<std::string>& names) {
  std::set<std::string> prefixes;
  for (const auto& n : names) {
    MT_CHECK(!n.empty(), ErrorKind::Checkpoint, "cannot save a checkpoint: empty ", kind, " name");
    MT_CHECK(n.find('\0') == std::string::npos, ErrorKind::Checkpoint, "cannot save a checkpoint: ", kind,
             " name with a NUL byte");
    size_t start = 0;
    for (;;) {
      size_t slash = n.find('/', start);
      std::string comp = n.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
      MT_CHECK(!comp.empty() && comp != "." && comp != "..", ErrorKind::Checkpoint, "cannot save a checkpoint: ", kind,
               " name '", n, "' has an empty, '.' or '..' path component");
      if (slash == std::string::npos) break;
      prefixes.insert(n.substr(0, slash));
      start = slash + 1;
    }
  }
  for (const auto& n : names)
    MT_CHECK(!prefixes.count(n), ErrorKind::Checkpoint, "cannot save a checkpoint: ", kind, " name '", n,
             "' is also the group of another name ('", n, "/...')");
}

template <typename Map>
std::vector<std::string> keys_of(const Map& m) {
  std::vector<std::string> out;
  for (const auto& kv : m) out.push_back(kv.first);
  return out;
}

struct Writer {
  hid_t file;
  H5Obj gcpl{H5Pcreate(H5P_GROUP_CREATE), H5Pclose};
  H5Obj dcpl{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
  std::set<std::string> groups;

  explicit Writer(hid_t f) : file(f) {
    if (!gcpl.ok() || !dcpl.ok() || H5Pset_obj_track_times(gcpl, 0) < 0 || H5Pset_obj_track_times(dcpl, 0) < 0)
      h5_fail("cannot create HDF5 property lists");
  }
  // Creates "/a", "/a/b", ... for the parent groups of `path` (absolute, no trailing slash).
  void ensure_parents(const std::string& path) {
    for (size_t slash = path.find('/', 1); slash != std::string::npos; slash = path.find('/', slash + 1)) {
      std::string g = path.substr(0, slash);
      if (!groups.insert(g).second) continue;
      H5Obj gid(H5Gcreate2(file, g.c_str(), H5P_DEFAULT, gcpl, H5P_DEFAULT), H5Gclose);
      if (!gid.ok()) h5_fail("cannot create group '" + g + "'");
    }
  }
  void dataset(const std::string& path, hid_t ftype, hid_t space, hid_t mtype, const void* buf, bool write) {
    ensure_parents(path);
    H5Obj ds(H5Dcreate2(file, path.c_str(), ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), H5Dclose);
    if (!ds.ok()) h5_fail("cannot create dataset '" + path + "'");
    if (write && H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) h5_fail("cannot write '" + path + "'");
  }
};

// Fixed-length string type of max(n, 1) bytes, NUL-padded (so that every byte, NULs included, round-trips).
hid_t string_type(size_t n) {
  hid_t t = H5Tcopy(H5T_C_S1);
  if (t < 0 || H5Tset_size(t, n ? n : 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLPAD) < 0) h5_fail("string type");
  return t;
}

void write_attr_i64(hid_t loc, const char* name, int64_t v) {
  H5Obj space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Obj a(H5Acreate2(loc, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!a.ok() || H5Awrite(a, H5T_NATIVE_INT64, &v) < 0) h5_fail(str("cannot write attribute '", name, "'"));
}

void write_attr_str(hid_t loc, const char* name, const std::string& v) {
  H5Obj type(string_type(v.size()), H5Tclose);
  H5Obj space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Obj a(H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  std::string buf = v.empty() ? std::string(1, '\0') : v;
  if (!a.ok() || H5Awrite(a, type, buf.data()) < 0) h5_fail(str("cannot write attribute '", name, "'"));
}

// ---------------------------------------------------------------- reading

// Link names of a group, in name order (collected first: callbacks must not throw).
struct LinkList {
  std::vector<std::pair<std::string, H5L_type_t>> links;
  bool oom = false;
};
herr_t collect_link(hid_t, const char* name, const H5L_info_t* info, void* op) {
  auto* l = static_cast<LinkList*>(op);
  try {
    l->links.emplace_back(name, info->type);
  } catch (...) {
    l->oom = true;
    return -1;
  }
  return 0;
}

constexpr int kMaxDepth = 64;
constexpr int64_t kMaxObjects = 1000000;  // bounds the walk of hostile files (hard-link cycles / fan-out)

using DatasetFn = std::function<void(const std::string& name, hid_t ds)>;

void walk(hid_t group, const std::string& prefix, int depth, int64_t* visited, const DatasetFn& fn) {
  if (depth > kMaxDepth) fail("groups nested deeper than " + std::to_string(kMaxDepth) + " levels at '" + prefix + "'");
  LinkList ll;
  hsize_t idx = 0;
  if (H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_link, &ll) < 0)
    h5_fail("cannot list group '" + prefix + "'");
  for (const auto& link : ll.links) {
    const std::string full = prefix + "/" + link.first;
    if (++*visited > kMaxObjects) fail("more than " + std::to_string(kMaxObjects) + " objects");
    if (link.second != H5L_TYPE_HARD) fail("'" + full + "' is a soft or external link (not allowed in a checkpoint)");
    H5Obj obj(H5Oopen(group, link.first.c_str(), H5P_DEFAULT), H5Oclose);
    if (!obj.ok()) h5_fail("cannot open '" + full + "'");
    H5I_type_t t = H5Iget_type(obj);
    if (t == H5I_GROUP) {
      walk(obj, full, depth + 1, visited, fn);
    } else if (t == H5I_DATASET) {
      fn(full, obj);
    } else {
      fail("'" + full + "' is neither a group nor a dataset");
    }
  }
}

struct DsInfo {
  H5T_class_t cls;
  size_t size;
  H5T_sign_t sign;
  bool null_space = false;
  Shape shape;
  int64_t numel = 1;
  hsize_t storage = 0;
};

DsInfo inspect(const std::string& name, hid_t ds) {
  DsInfo d;
  H5Obj type(H5Dget_type(ds), H5Tclose);
  H5Obj space(H5Dget_space(ds), H5Sclose);
  H5Obj dcpl(H5Dget_create_plist(ds), H5Pclose);
  if (!type.ok() || !space.ok() || !dcpl.ok()) h5_fail("cannot inspect dataset '" + name + "'");
  if (H5Pget_nfilters(dcpl) != 0) fail("dataset '" + name + "' uses HDF5 filters (mamba-train never writes any)");
  d.cls = H5Tget_class(type);
  d.size = H5Tget_size(type);
  d.sign = d.cls == H5T_INTEGER ? H5Tget_sign(type) : H5T_SGN_ERROR;
  if (d.cls == H5T_STRING && H5Tis_variable_str(type) != 0) fail("dataset '" + name + "' is a variable-length string");
  H5S_class_t sc = H5Sget_simple_extent_type(space);
  if (sc == H5S_NULL) {
    d.null_space = true;
    d.numel = 0;
  } else if (sc == H5S_SIMPLE) {
    int nd = H5Sget_simple_extent_ndims(space);
    if (nd < 0 || nd > H5S_MAX_RANK) h5_fail("bad dataspace of '" + name + "'");
    std::vector<hsize_t> dims(static_cast<size_t>(nd));
    if (nd > 0 && H5Sget_simple_extent_dims(space, dims.data(), nullptr) < 0) h5_fail("bad dims of '" + name + "'");
    for (hsize_t v : dims) {
      if (v > static_cast<hsize_t>(INT64_MAX) || __builtin_mul_overflow(d.numel, static_cast<int64_t>(v), &d.numel))
        fail("dataset '" + name + "' has an impossible shape");
      d.shape.push_back(static_cast<int64_t>(v));
    }
  } else if (sc != H5S_SCALAR) {
    h5_fail("bad dataspace of '" + name + "'");
  }
  d.storage = H5Dget_storage_size(ds);
  int64_t bytes = 0;
  if (__builtin_mul_overflow(d.numel, static_cast<int64_t>(d.size), &bytes) || static_cast<hsize_t>(bytes) != d.storage)
    fail(str("dataset '", name, "' ", shape_str(d.shape), " of ", d.size, "-byte elements needs ", bytes,
             " bytes, the file holds ", d.storage));
  return d;
}

DType tensor_dtype(const std::string& name, const DsInfo& d) {
  if (d.cls == H5T_FLOAT && d.size == 4) return DType::F32;
  if (d.cls == H5T_FLOAT && d.size == 8) return DType::F64;
  if (d.cls == H5T_INTEGER && d.sign == H5T_SGN_2 && d.size == 4) return DType::I32;
  if (d.cls == H5T_INTEGER && d.sign == H5T_SGN_2 && d.size == 8) return DType::I64;
  fail(str("dataset '", name, "' has an unsupported type (class ", static_cast<int>(d.cls), ", ", d.size,
           " bytes); checkpoints hold f32, f64, i32, i64"));
}

hid_t native_type(DType dt) {
  switch (dt) {
    case DType::F64: return H5T_NATIVE_DOUBLE;
    case DType::I32: return H5T_NATIVE_INT32;
    case DType::I64: return H5T_NATIVE_INT64;
    default: return H5T_NATIVE_FLOAT;
  }
}

// A short (<= 4 KiB) string attribute, up to its first NUL; `found` false when absent.
std::string read_attr_str(hid_t loc, const char* name, bool* found) {
  *found = H5Aexists(loc, name) > 0;
  if (!*found) return "";
  H5Obj a(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
  H5Obj type(a.ok() ? H5Aget_type(a) : -1, H5Tclose);
  H5Obj space(a.ok() ? H5Aget_space(a) : -1, H5Sclose);
  if (!type.ok() || !space.ok()) h5_fail(str("cannot open attribute '", name, "'"));
  size_t n = H5Tget_size(type);
  if (H5Tget_class(type) != H5T_STRING || H5Tis_variable_str(type) != 0 || n == 0 || n > 4096 ||
      H5Sget_simple_extent_npoints(space) != 1)
    fail(str("attribute '", name, "' is not a short fixed-length string"));
  std::string buf(n, '\0');
  if (H5Aread(a, type, &buf[0]) < 0) h5_fail(str("cannot read attribute '", name, "'"));
  return buf.substr(0, buf.find('\0'));
}

int64_t read_attr_i64(hid_t loc, const char* name) {
  if (H5Aexists(loc, name) <= 0) fail(str("missing root attribute '", name, "'"));
  H5Obj a(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
  H5Obj type(a.ok() ? H5Aget_type(a) : -1, H5Tclose);
  H5Obj space(a.ok() ? H5Aget_space(a) : -1, H5Sclose);
  if (!type.ok() || !space.ok()) h5_fail(str("cannot open attribute '", name, "'"));
  if (H5Tget_class(type) != H5T_INTEGER || H5Sget_simple_extent_npoints(space) != 1)
    fail(str("attribute '", name, "' is not an integer"));
  int64_t v = 0;
  if (H5Aread(a, H5T_NATIVE_INT64, &v) < 0) h5_fail(str("cannot read attribute '", name, "'"));
  return v;
}

// Walks "/<group>"; fn gets the full path ("/tensors/model/w") and the name inside the group ("model/w").
using ItemFn = std::function<void(const std::string& path, const std::string& name, hid_t ds)>;
void read_group(hid_t file, const char* group, int64_t* visited, const ItemFn& fn) {
  const std::string top = str("/", group);
  if (H5Lexists(file, group, H5P_DEFAULT) <= 0) fail("missing group '" + top + "'");
  H5Obj g(H5Gopen2(file, group, H5P_DEFAULT), H5Gclose);
  if (!g.ok()) h5_fail("'" + top + "' is not a group");
  walk(g, top, 0, visited, [&](const std::string& path, hid_t ds) { fn(path, path.substr(top.size() + 1), ds); });
}

}  // namespace

std::vector<unsigned char> build_checkpoint_image(int64_t step, const CheckpointData& data, int64_t format_version) {
  validate_names("tensor", keys_of(data.tensors));
  validate_names("int", keys_of(data.ints));
  validate_names("float", keys_of(data.floats));
  validate_names("string", keys_of(data.strings));
  // Host, contiguous, storable copies first (no HDF5 lock held meanwhile). Estimate the image size so that the core
  // driver allocates once: raw bytes + ~2 KiB of metadata per object + 1 MiB.
  std::vector<std::pair<Tensor, const char*>> host;  // tensor, original half dtype name (or nullptr)
  size_t estimate = size_t(1) << 20;
  for (const auto& kv : data.tensors) {
    MT_CHECK(kv.second.defined(), ErrorKind::Checkpoint, "cannot save a checkpoint: tensor '", kv.first,
             "' is undefined");
    Tensor t = kv.second.to(Device::cpu()).contiguous();
    const char* half = is_half(t.dtype()) ? dtype_name(t.dtype()) : nullptr;
    if (half) t = t.to(DType::F32);
    host.emplace_back(t, half);
    estimate += t.nbytes() + 2048;
  }
  for (const auto& kv : data.strings) estimate += kv.second.size() + 2048;
  estimate += 2048 * (data.ints.size() + data.floats.size());

  H5Session session;
  H5Obj fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fapl.ok() || H5Pset_fapl_core(fapl, estimate + estimate / 8, 0) < 0) h5_fail("cannot set up the core driver");
  H5Obj file(H5Fcreate(unique_image_name().c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl), H5Fclose);
  if (!file.ok()) h5_fail("cannot create an in-memory HDF5 file");
  write_attr_i64(file, "format_version", format_version);
  write_attr_str(file, "writer", "mamba-train");
  write_attr_i64(file, "step", step);
  Writer w(file);
  for (const char* g : {"/tensors/", "/ints/", "/floats/", "/strings/"}) w.ensure_parents(g);

  size_t i = 0;
  for (const auto& kv : data.tensors) {
    const Tensor& t = host[i].first;
    const char* half = host[i++].second;
    hid_t ftype = t.dtype() == DType::F64   ? H5T_IEEE_F64LE
                  : t.dtype() == DType::I32 ? H5T_STD_I32LE
                  : t.dtype() == DType::I64 ? H5T_STD_I64LE
                                            : H5T_IEEE_F32LE;
    std::vector<hsize_t> dims(t.shape().begin(), t.shape().end());
    H5Obj space(
        t.dim() == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
        H5Sclose);
    if (!space.ok()) h5_fail("cannot make the dataspace of tensor '" + kv.first + "' " + shape_str(t.shape()));
    const std::string path = "/tensors/" + kv.first;
    w.dataset(path, ftype, space, native_type(t.dtype()), t.data_ptr(), t.numel() > 0);
    if (half) {
      H5Obj ds(H5Dopen2(file, path.c_str(), H5P_DEFAULT), H5Dclose);
      if (!ds.ok()) h5_fail("cannot reopen '" + path + "'");
      write_attr_str(ds, "mt_dtype", half);
    }
  }
  H5Obj scalar(H5Screate(H5S_SCALAR), H5Sclose);
  for (const auto& kv : data.ints)
    w.dataset("/ints/" + kv.first, H5T_STD_I64LE, scalar, H5T_NATIVE_INT64, &kv.second, true);
  for (const auto& kv : data.floats)
    w.dataset("/floats/" + kv.first, H5T_IEEE_F64LE, scalar, H5T_NATIVE_DOUBLE, &kv.second, true);
  for (const auto& kv : data.strings) {
    H5Obj type(string_type(kv.second.size()), H5Tclose);
    H5Obj space(H5Screate(kv.second.empty() ? H5S_NULL : H5S_SCALAR), H5Sclose);
    w.dataset("/strings/" + kv.first, type, space, type, kv.second.data(), !kv.second.empty());
  }

  if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) h5_fail("cannot flush the in-memory HDF5 file");
  ssize_t n = H5Fget_file_image(file, nullptr, 0);
  if (n <= 0) h5_fail("cannot size the HDF5 file image");
  std::vector<unsigned char> image(static_cast<size_t>(n));
  if (H5Fget_file_image(file, image.data(), image.size()) != n) h5_fail("cannot copy the HDF5 file image");
  return image;
}

CheckpointData parse_checkpoint_image(std::vector<unsigned char>& bytes, int64_t expected_step, bool read_data,
                                      bool read_tensors) {
  static const unsigned char kSignature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  if (bytes.size() < 8 || std::memcmp(bytes.data(), kSignature, 8) != 0)
    fail("not an HDF5 file (no HDF5 signature at offset 0)");

  H5Session session;
  hid_t file_id = -1;
  std::string open_error;
  {
    H5Obj fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    if (!fapl.ok() || H5Pset_fapl_core(fapl, size_t(1) << 20, 0) < 0 ||
        H5Pset_file_image(fapl, bytes.data(), bytes.size()) < 0)
      h5_fail("cannot hand the file image to HDF5");
    std::vector<unsigned char>().swap(bytes);  // the property list holds its own copy now
    file_id = H5Fopen(unique_image_name().c_str(), H5F_ACC_RDONLY, fapl);
    if (file_id < 0) open_error = h5_error_text();  // before H5Pclose resets the error stack
  }
  H5Obj file(file_id, H5Fclose);
  if (!file.ok()) fail("not a readable HDF5 file (HDF5: " + open_error + ")");

  bool found = false;
  std::string writer = read_attr_str(file, "writer", &found);
  if (!found) fail("not a mamba-train checkpoint (no 'writer' attribute)");
  if (writer != "mamba-train") fail("not a mamba-train checkpoint (writer '" + writer + "')");
  int64_t version = read_attr_i64(file, "format_version");
  if (version != kCheckpointFormatVersion)
    fail(str("format version ", version, ", this build reads ", kCheckpointFormatVersion));
  int64_t step = read_attr_i64(file, "step");
  if (expected_step >= 0 && step != expected_step)
    fail(str("the file holds step ", step, " but its name says step ", expected_step));

  CheckpointData out;
  int64_t visited = 0;
  read_group(file, "tensors", &visited, [&](const std::string& path, const std::string& name, hid_t ds) {
    DsInfo d = inspect(path, ds);
    if (d.null_space) fail("tensor '" + path + "' has a null dataspace");
    DType dt = tensor_dtype(path, d);
    bool half_found = false;
    std::string half = read_attr_str(ds, "mt_dtype", &half_found);
    if (half_found && !(dt == DType::F32 && (half == "bf16" || half == "f16")))
      fail("tensor '" + path + "' has mt_dtype '" + half + "' on a " + dtype_name(dt) + " dataset");
    if (!read_data || !read_tensors) return;
    Tensor t = Tensor::empty(d.shape, dt);
    if (d.numel > 0 && H5Dread(ds, native_type(dt), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) < 0)
      h5_fail("cannot read tensor '" + path + "'");
    if (half_found) t = t.to(dtype_from_name(half));
    out.tensors.emplace(name, t);
  });
  read_group(file, "ints", &visited, [&](const std::string& path, const std::string& name, hid_t ds) {
    DsInfo d = inspect(path, ds);
    if (d.cls != H5T_INTEGER || d.size > 8 || d.null_space || !d.shape.empty())
      fail("'" + path + "' is not a scalar integer");
    int64_t v = 0;
    if (read_data && H5Dread(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) < 0)
      h5_fail("cannot read '" + path + "'");
    if (read_data) out.ints.emplace(name, v);
  });
  read_group(file, "floats", &visited, [&](const std::string& path, const std::string& name, hid_t ds) {
    DsInfo d = inspect(path, ds);
    if (d.cls != H5T_FLOAT || d.null_space || !d.shape.empty()) fail("'" + path + "' is not a scalar float");
    double v = 0;
    if (read_data && H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) < 0)
      h5_fail("cannot read '" + path + "'");
    if (read_data) out.floats.emplace(name, v);
  });
  read_group(file, "strings", &visited, [&](const std::string& path, const std::string& name, hid_t ds) {
    DsInfo d = inspect(path, ds);
    if (d.cls != H5T_STRING || !d.shape.empty()) fail("'" + path + "' is not a scalar fixed-length string");
    std::string v;
    if (read_data && !d.null_space) {
      H5Obj type(H5Dget_type(ds), H5Tclose);
      v.assign(d.size, '\0');
      if (!type.ok() || H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v[0]) < 0)
        h5_fail("cannot read '" + path + "'");
    }
    if (read_data) out.strings.emplace(name, std::move(v));
  });
  return out;
}

}  // namespace mt::train
