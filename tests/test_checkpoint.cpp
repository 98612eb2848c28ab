// HDF5 checkpoints (train/ckpt/checkpoint.h): bit-exact round trips, retention and the latest pointer, one refusal per
// kind of damage (each must name the file and the problem, and never crash), EFBIG under RLIMIT_FSIZE, kills at every
// save stage (fault hook) and SIGKILL at random moments during ~20 MB saves.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/tensor.h"
#include "train/ckpt/checkpoint.h"
#include "train/ckpt/checkpoint_io.h"
#include "train/ckpt/hdf5_io.h"

namespace mt::train {
namespace {

namespace fs = std::filesystem;

std::vector<unsigned char> read_bytes(const std::string& p) {
  std::vector<unsigned char> b;
  EXPECT_EQ(read_whole_file(p, &b), 0) << p;
  return b;
}
void write_bytes(const std::string& p, const std::vector<unsigned char>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
void write_text(const std::string& p, const std::string& s) { write_bytes(p, {s.begin(), s.end()}); }

// Every value kind, including the awkward ones; `big` f32 elements of bulk make the file size.
CheckpointData make_data(int64_t big, uint64_t seed) {
  Generator gen(seed);
  CheckpointData d;
  d.tensors["model/backbone.layers.0.mixer.A_log"] = Tensor::randn({7, 13}, gen);
  d.tensors["model/backbone.embedding.weight"] = Tensor::randn({big}, gen);
  d.tensors["optim/exp_avg/model/backbone.layers.0.mixer.A_log"] = Tensor::randn({7, 13}, gen);
  d.tensors["optim/f64"] = Tensor::randn({3, 2, 5}, gen, 0.0, 1.0, DType::F64);
  d.tensors["i64"] = Tensor::randint({11}, gen, -(int64_t(1) << 40), int64_t(1) << 40, DType::I64);
  d.tensors["i32"] = Tensor::randint({2, 3}, gen, -100000, 100000, DType::I32);
  d.tensors["scalar_f32"] = Tensor::scalar(-0.0, DType::F32);
  d.tensors["scalar_i64"] = Tensor::scalar(-42, DType::I64);
  d.tensors["empty"] = Tensor::empty({0, 3}, DType::F32);
  d.tensors["half/bf16"] = Tensor::randn({5, 4}, gen, 0.0, 1.0, DType::BF16);
  d.tensors["half/f16"] = Tensor::randn({9}, gen, 0.0, 1.0, DType::F16);
  float special[6] = {std::numeric_limits<float>::quiet_NaN(), INFINITY, -INFINITY, 1e-45f, -0.0f, 3.5f};
  Tensor sp = Tensor::empty({6}, DType::F32);
  std::memcpy(sp.data_ptr(), special, sizeof(special));
  d.tensors["special.values"] = sp;
  d.ints = {{"step", 1234},
            {"samples_seen", int64_t(1) << 50},
            {"rng/seed", -1},
            {"rng/offset", std::numeric_limits<int64_t>::min()},
            {"scaler/good_steps", std::numeric_limits<int64_t>::max()}};
  d.floats = {{"scaler/scale", 65536.0}, {"nan", std::nan("0x5")}, {"neg_zero", -0.0},
              {"inf", -INFINITY},        {"denormal", 4.9e-324},   {"pi", 3.141592653589793}};
  d.strings = {{"config_yaml", "model:\n  d_model: 64\n  variant: tiny # comment\n"},
               {"data_fingerprint", "sha256:0123abcd"},
               {"empty", ""},
               {"nul/inside", std::string("a\0b\0", 4)},
               {"bytes", std::string("\xff\xfe caf\xc3\xa9 \x01", 10)}};
  return d;
}

void expect_same(const CheckpointData& a, const CheckpointData& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& kv : a.tensors) {
    ASSERT_TRUE(b.tensors.count(kv.first)) << kv.first;
    const Tensor x = kv.second.contiguous(), y = b.tensors.at(kv.first);
    EXPECT_EQ(x.dtype(), y.dtype()) << kv.first;
    EXPECT_EQ(x.shape(), y.shape()) << kv.first;
    ASSERT_EQ(x.nbytes(), y.nbytes()) << kv.first;
    if (x.nbytes() > 0) {  // (memcmp must not see the null data pointer of an empty tensor)
      EXPECT_EQ(std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()), 0) << kv.first << " differs";
    }
  }
  EXPECT_EQ(a.ints, b.ints);
  ASSERT_EQ(a.floats.size(), b.floats.size());
  for (const auto& kv : a.floats) {
    ASSERT_TRUE(b.floats.count(kv.first)) << kv.first;
    EXPECT_EQ(std::memcmp(&kv.second, &b.floats.at(kv.first), 8), 0) << kv.first << " not bit-exact";
  }
  EXPECT_EQ(a.strings, b.strings);
}

std::vector<std::string> dir_names(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

int count_temp_files(const std::string& dir) {
  int n = 0;
  for (const auto& name : dir_names(dir)) n += is_checkpoint_temp_name(name);
  return n;
}

class CheckpointFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char templ[] = "/tmp/mt_checkpoint_XXXXXX";
    ASSERT_NE(mkdtemp(templ), nullptr);
    dir_ = templ;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  // verify_checkpoint and load_checkpoint must both refuse `path`, naming the problem (and the file for load).
  void expect_refused(const std::string& path, const std::string& what, const std::string& label) {
    SCOPED_TRACE(label);
    std::string reason = verify_checkpoint(path);
    EXPECT_NE(reason.find(what), std::string::npos) << "verify said '" << reason << "', expected '" << what << "'";
    try {
      load_checkpoint(path);
      ADD_FAILURE() << "load_checkpoint accepted a damaged checkpoint";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Checkpoint);
      std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find(what), std::string::npos) << msg;
    }
  }
  std::string dir_;
};

TEST_F(CheckpointFile, RoundTripAllValueKindsBitExact) {
  CheckpointData d = make_data(1000, 1);
  std::string p = save_checkpoint(dir_ + "/sub/dir", 1234, d, 3);  // creates missing directories
  EXPECT_EQ(p, dir_ + "/sub/dir/ckpt-00001234.h5");
  EXPECT_EQ(verify_checkpoint(p), "");
  CheckpointData back = load_checkpoint(p);
  expect_same(d, back);
  EXPECT_EQ(back.tensors.at("half/bf16").dtype(), DType::BF16);
  EXPECT_EQ(back.tensors.at("scalar_i64").dim(), 0);
  // The manifest is sha256sum's format; the same content gives the same bytes.
  auto bytes = read_bytes(p);
  std::string manifest;
  for (unsigned char c : read_bytes(p + ".sha256")) manifest += static_cast<char>(c);
  EXPECT_EQ(manifest, sha256_hex(bytes.data(), bytes.size()) + "  ckpt-00001234.h5\n");
  EXPECT_EQ(build_checkpoint_image(1234, d), bytes);
  // A non-contiguous view is saved as its values.
  CheckpointData v;
  Tensor base = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  v.tensors["t"] = base.as_strided({3, 2}, {1, 3}, 0);
  CheckpointData vb = load_checkpoint(save_checkpoint(dir_, 5, v, 0));
  EXPECT_EQ(vb.tensors.at("t").to_vector(), (std::vector<double>{1, 4, 2, 5, 3, 6}));
}

TEST_F(CheckpointFile, BadNamesAreRefusedBeforeAnythingIsWritten) {
  const std::vector<std::vector<std::string>> bad = {{"a", "a/b"}, {""},     {"a//b"},  {"./x"},
                                                     {"x/.."},     {"/abs"}, {"trail/"}};
  for (const auto& names : bad) {
    CheckpointData d;
    for (const auto& n : names) d.ints[n] = 1;
    try {
      save_checkpoint(dir_ + "/never", 1, d, 1);
      ADD_FAILURE() << "accepted names starting with '" << names[0] << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Checkpoint) << e.what();
    }
  }
  EXPECT_FALSE(fs::exists(dir_ + "/never"));
  CheckpointData u;
  u.tensors["undefined"] = Tensor();
  EXPECT_THROW(save_checkpoint(dir_, 1, u, 1), Error);
  EXPECT_THROW(save_checkpoint(dir_, -1, CheckpointData{}, 1), Error);
}

TEST_F(CheckpointFile, RetentionKeepsExactlyKeepLastAndLatestPointsToNewest) {
  CheckpointData d = make_data(100, 2);
  for (int64_t step = 10; step <= 60; step += 10) save_checkpoint(dir_, step, d, 3);
  std::vector<std::string> want = {"ckpt-00000040.h5",
                                   "ckpt-00000040.h5.sha256",
                                   "ckpt-00000050.h5",
                                   "ckpt-00000050.h5.sha256",
                                   "ckpt-00000060.h5",
                                   "ckpt-00000060.h5.sha256",
                                   "latest"};
  EXPECT_EQ(dir_names(dir_), want);
  auto latest = read_bytes(dir_ + "/latest");
  EXPECT_EQ(std::string(latest.begin(), latest.end()), "ckpt-00000060.h5\n");
  EXPECT_EQ(latest_checkpoint(dir_), dir_ + "/ckpt-00000060.h5");
  // Steps past 8 digits still sort by number.
  save_checkpoint(dir_, 123456789, d, 2);
  EXPECT_EQ(latest_checkpoint(dir_), dir_ + "/ckpt-123456789.h5");
  EXPECT_EQ(dir_names(dir_).size(), 5u);
  // keep_last <= 0 keeps everything; the debris of interrupted saves is cleaned up: an orphan manifest (kill between
  // the two unlinks of retention) and a checkpoint file without a manifest (kill between the two renames).
  write_text(dir_ + "/ckpt-00000001.h5.sha256", "orphan");
  write_text(dir_ + "/ckpt-00000002.h5", "never published");
  save_checkpoint(dir_, 123456790, d, 0);
  EXPECT_EQ(dir_names(dir_).size(), 7u);
  EXPECT_FALSE(fs::exists(dir_ + "/ckpt-00000001.h5.sha256"));
  EXPECT_FALSE(fs::exists(dir_ + "/ckpt-00000002.h5"));
}

TEST_F(CheckpointFile, CorruptionIsRefusedWithAClearMessage) {
  CheckpointData d = make_data(250000, 3);  // ~1 MB
  const std::string p = save_checkpoint(dir_, 2, d, 5);
  const auto good = read_bytes(p);
  const auto good_manifest = read_bytes(p + ".sha256");
  ASSERT_GT(good.size(), 1000000u);
  auto restore = [&] {
    write_bytes(p, good);
    write_bytes(p + ".sha256", good_manifest);
    ASSERT_EQ(verify_checkpoint(p), "");
  };
  const size_t n = good.size();
  for (size_t cut : {size_t(0), size_t(1), size_t(8), n / 2, n - 1}) {
    ASSERT_EQ(::truncate(p.c_str(), static_cast<off_t>(cut)), 0);
    expect_refused(p, "SHA-256 mismatch: file changed or truncated", "truncated to " + std::to_string(cut));
    restore();
  }
  for (size_t off : {size_t(0), size_t(5), size_t(200), n / 2, n - 1}) {
    auto b = good;
    b[off] ^= 0x10;
    write_bytes(p, b);
    expect_refused(p, "SHA-256 mismatch", "bit flip at " + std::to_string(off));
    restore();
  }
  {
    auto b = good;
    std::fill(b.begin() + static_cast<long>(n / 2 & ~size_t(4095)),
              b.begin() + static_cast<long>((n / 2 & ~size_t(4095)) + 4096), 0);
    write_bytes(p, b);
    expect_refused(p, "SHA-256 mismatch", "zeroed 4 KiB block");
    restore();
  }
  fs::remove(p + ".sha256");
  expect_refused(p, "manifest missing", "manifest missing");
  restore();
  {
    auto m = good_manifest;
    m[10] = m[10] == '0' ? '1' : '0';
    write_bytes(p + ".sha256", m);
    expect_refused(p, "SHA-256 mismatch", "manifest with a wrong hash");
    restore();
  }
  write_text(p + ".sha256", "not a manifest\n");
  expect_refused(p, "manifest malformed", "malformed manifest");
  restore();
  write_text(p + ".sha256", sha256_hex(good.data(), n) + "  ckpt-00000001.h5\n");
  expect_refused(p, "manifest names another file", "manifest naming another file");
  restore();
  {  // a newer format, correctly hashed
    auto v7 = build_checkpoint_image(2, d, 7);
    write_bytes(p, v7);
    write_text(p + ".sha256", checkpoint_manifest("ckpt-00000002.h5", v7.data(), v7.size()));
    expect_refused(p, "format version 7, this build reads 1", "format version bumped");
    restore();
  }
  {  // random bytes with their real hash: HDF5 never sees them
    std::mt19937 rng(7);
    std::vector<unsigned char> junk(70000);
    for (auto& c : junk) c = static_cast<unsigned char>(rng());
    write_bytes(p, junk);
    write_text(p + ".sha256", checkpoint_manifest("ckpt-00000002.h5", junk.data(), junk.size()));
    expect_refused(p, "not an HDF5 file", "random bytes with a valid manifest");
    // The HDF5 signature followed by garbage: HDF5 itself must fail cleanly.
    std::memcpy(junk.data(), "\x89HDF\r\n\x1a\n", 8);
    write_bytes(p, junk);
    write_text(p + ".sha256", checkpoint_manifest("ckpt-00000002.h5", junk.data(), junk.size()));
    expect_refused(p, "not a readable HDF5 file", "HDF5 signature + garbage");
    // A valid HDF5 file that mamba-train did not write as a checkpoint.
    write_h5(p, {{"logits", Tensor::ones({2, 2})}});
    auto other = read_bytes(p);
    write_text(p + ".sha256", checkpoint_manifest("ckpt-00000002.h5", other.data(), other.size()));
    expect_refused(p, "not a mamba-train checkpoint", "foreign HDF5 file");
    restore();
  }
  {  // another checkpoint renamed over this one: alone, with its manifest, and with a doctored manifest
    const std::string p1 = save_checkpoint(dir_, 1, make_data(1000, 4), 5);
    const auto b1 = read_bytes(p1);
    write_bytes(p, b1);
    expect_refused(p, "SHA-256 mismatch", "other checkpoint renamed over it");
    write_bytes(p + ".sha256", read_bytes(p1 + ".sha256"));
    expect_refused(p, "manifest names another file", "other checkpoint and its manifest renamed over it");
    write_text(p + ".sha256", checkpoint_manifest("ckpt-00000002.h5", b1.data(), b1.size()));
    expect_refused(p, "holds step 1 but its name says step 2", "other checkpoint with a doctored manifest");
    restore();
  }
  expect_refused(dir_ + "/ckpt-00000077.h5", "manifest missing", "no such checkpoint");
  expect_same(d, load_checkpoint(p));
}

TEST_F(CheckpointFile, LatestCheckpointSkipsCorruptNewerOnes) {
  EXPECT_EQ(latest_checkpoint(dir_ + "/missing"), "");
  EXPECT_EQ(latest_checkpoint(dir_), "");
  CheckpointData d = make_data(5000, 5);
  for (int64_t s : {1, 2, 3}) save_checkpoint(dir_, s, d, 10);
  auto b = read_bytes(dir_ + "/ckpt-00000003.h5");
  b[b.size() / 3] ^= 1;
  write_bytes(dir_ + "/ckpt-00000003.h5", b);
  write_text(dir_ + "/ckpt-00000009.h5", "no manifest");      // a kill between data rename and manifest
  write_text(dir_ + "/.ckpt-0123abcd.tmp", "partial write");  // a stray temp file: never considered
  write_text(dir_ + "/latest", "ckpt-00000003.h5\n");         // the pointer is only a hint
  std::vector<std::string> skipped;
  EXPECT_EQ(latest_checkpoint(dir_, &skipped), dir_ + "/ckpt-00000002.h5");
  ASSERT_EQ(skipped.size(), 2u);
  EXPECT_EQ(skipped[0].rfind(dir_ + "/ckpt-00000009.h5: manifest missing", 0), 0u) << skipped[0];
  EXPECT_EQ(skipped[1].rfind(dir_ + "/ckpt-00000003.h5: SHA-256 mismatch", 0), 0u) << skipped[1];
  expect_same(d, load_checkpoint(latest_checkpoint(dir_)));
}

TEST_F(CheckpointFile, StaleTempFilesOfDeadWritersAreRemovedLiveOnesKept) {
  const std::string dead = dir_ + "/.ckpt-0badc0de.tmp", live = dir_ + "/.ckpt-11112222.tmp",
                    fresh = dir_ + "/.ckpt-33334444.tmp";
  for (const auto& p : {dead, live, fresh}) write_text(p, "partial");
  struct timeval old[2] = {{::time(nullptr) - 3600, 0}, {::time(nullptr) - 3600, 0}};
  ASSERT_EQ(::utimes(dead.c_str(), old), 0);
  ASSERT_EQ(::utimes(live.c_str(), old), 0);
  int fd = ::open(live.c_str(), O_RDONLY);  // a live writer holds its lock
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  save_checkpoint(dir_, 1, make_data(10, 6), 2);
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(fresh));
  ::close(fd);
}

TEST_F(CheckpointFile, AfterASaveTempFilesOfEarlierProcessesAreGoneWhateverTheirAge) {
  // Modified before this process started and unlocked: left by a writer that died. Those of this process (a live
  // writer here would hold its lock) stay.
  const std::string earlier = dir_ + "/.ckpt-0badc0de.tmp", mine = dir_ + "/.ckpt-33334444.tmp",
                    locked = dir_ + "/.ckpt-11112222.tmp";
  for (const auto& p : {earlier, mine, locked}) write_text(p, "partial");
  std::ifstream stat_file("/proc/self/stat");
  std::string stat_line;
  std::getline(stat_file, stat_line);
  // Seconds since this process started: field 22 (clock ticks after boot) against the uptime.
  std::istringstream fields(stat_line.substr(stat_line.rfind(')') + 2));
  std::string f;
  for (int i = 3; i <= 22; ++i) fields >> f;
  double uptime = 0;
  std::ifstream("/proc/uptime") >> uptime;
  const double age = uptime - std::stod(f) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  // Shortly before this process started (under the 10 s that the cleanup before a save waits for, when this process
  // is young).
  const time_t before = ::time(nullptr) - static_cast<time_t>(age) - 2;
  struct timeval tv[2] = {{before, 0}, {before, 0}};
  ASSERT_EQ(::utimes(earlier.c_str(), tv), 0);
  ASSERT_EQ(::utimes(locked.c_str(), tv), 0);
  int fd = ::open(locked.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  EXPECT_EQ(remove_temp_files_of_earlier_processes(dir_), 1);
  EXPECT_FALSE(fs::exists(earlier));
  EXPECT_TRUE(fs::exists(mine));
  EXPECT_TRUE(fs::exists(locked));
  ::close(fd);
  save_checkpoint(dir_, 1, make_data(10, 6), 2);  // the save does it too, after publishing
  EXPECT_FALSE(fs::exists(locked));
  EXPECT_TRUE(fs::exists(mine));
}

// The child's write hits RLIMIT_FSIZE (EFBIG, SIGXFSZ ignored): Io error naming the path and errno, no temp file,
// the previous checkpoint intact.
TEST_F(CheckpointFile, WriteFailureEFBIGLeavesPreviousCheckpointIntact) {
  CheckpointData d = make_data(250000, 7);
  const std::string prev = save_checkpoint(dir_, 1, d, 3);
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {256 * 1024, 256 * 1024};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    // A new step, then an overwrite of the existing step 1 with other values: both must fail and change nothing.
    int code = 0;
    std::string msg;
    for (int64_t step : {2, 1}) {
      try {
        save_checkpoint(dir_, step, make_data(250000, 70 + step), 3);
        code = 1;
        msg += "no exception\n";
      } catch (const Error& e) {
        msg += std::string(e.what()) + "\n";
        if (e.kind() != ErrorKind::Io) code = 2;
      } catch (...) {
        code = 3;
      }
    }
    ssize_t w = ::write(pipefd[1], msg.data(), msg.size());
    (void)w;
    ::_exit(code);
  }
  ::close(pipefd[1]);
  std::string msg;
  char buf[512];
  for (ssize_t r; (r = ::read(pipefd[0], buf, sizeof(buf))) > 0;) msg.append(buf, static_cast<size_t>(r));
  ::close(pipefd[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died: " << msg;
  EXPECT_EQ(WEXITSTATUS(status), 0) << msg;
  EXPECT_NE(msg.find(dir_ + "/ckpt-00000002.h5: write failed: " + std::strerror(EFBIG)), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir_ + "/ckpt-00000001.h5: write failed: " + std::strerror(EFBIG)), std::string::npos) << msg;
  EXPECT_EQ(count_temp_files(dir_), 0);
  EXPECT_FALSE(fs::exists(dir_ + "/ckpt-00000002.h5"));
  EXPECT_EQ(verify_checkpoint(prev), "");
  EXPECT_EQ(latest_checkpoint(dir_), prev);
  expect_same(d, load_checkpoint(prev));
}

const char* g_throw_stage = nullptr;
void throw_at_stage(const char* stage) {
  if (std::strcmp(stage, g_throw_stage) == 0) throw Error(ErrorKind::Io, std::string("injected failure at ") + stage);
}

// A failure after the data file is in place but before its manifest is: the new file is removed again (a reported
// failure never leaves a manifest-less checkpoint behind) and the previous checkpoint stays the latest.
TEST_F(CheckpointFile, FailureAtAnySaveStageBeforePublishingLeavesNoTrace) {
  CheckpointData d = make_data(1000, 11);
  const std::string prev = save_checkpoint(dir_, 1, d, 3);
  for (const char* stage : {"data:written", "data:synced", "data:renamed", "manifest:written", "manifest:synced"}) {
    SCOPED_TRACE(stage);
    g_throw_stage = stage;
    set_checkpoint_fault_hook(throw_at_stage);
    try {
      save_checkpoint(dir_, 2, d, 3);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Io);
      EXPECT_NE(std::string(e.what()).find(stage), std::string::npos) << e.what();
    }
    set_checkpoint_fault_hook(nullptr);
    EXPECT_EQ(dir_names(dir_), (std::vector<std::string>{"ckpt-00000001.h5", "ckpt-00000001.h5.sha256", "latest"}));
    EXPECT_EQ(latest_checkpoint(dir_), prev);
  }
  EXPECT_EQ(verify_checkpoint(prev), "");
}

// The directory must hold a loadable newest checkpoint, and every ckpt-*.h5 must verify except possibly the newest
// (the one being written), and even that one must be complete: only its manifest may be missing (only temp files are
// ever partial; images are deterministic, so its bytes must be exactly the image of that step). Returns the highest
// step present.
int64_t check_kill_invariants(const std::string& dir, const CheckpointData& d, const std::string& label,
                              int* caught_mid_save = nullptr) {
  SCOPED_TRACE(label);
  std::vector<int64_t> steps;
  for (const auto& name : dir_names(dir))
    if (checkpoint_step_from_name(name) >= 0) steps.push_back(checkpoint_step_from_name(name));
  EXPECT_FALSE(steps.empty());
  int64_t newest = steps.empty() ? -1 : *std::max_element(steps.begin(), steps.end());
  for (int64_t s : steps) {
    std::string reason = verify_checkpoint(dir + "/" + checkpoint_file_name(s));
    if (s != newest) {
      EXPECT_EQ(reason, "") << "step " << s << " (not the one being written) fails";
    } else if (!reason.empty()) {
      if (caught_mid_save) ++*caught_mid_save;
      EXPECT_EQ(reason.rfind("manifest missing", 0), 0u) << "the file being written is partial: " << reason;
      CheckpointData want = d;
      want.ints["step"] = s;
      EXPECT_TRUE(read_bytes(dir + "/" + checkpoint_file_name(s)) == build_checkpoint_image(s, want))
          << "step " << s << " is not the complete image";
    }
  }
  std::string latest = latest_checkpoint(dir);
  EXPECT_NE(latest, "");
  if (!latest.empty()) {
    CheckpointData back = load_checkpoint(latest);
    int64_t step = checkpoint_step_from_name(fs::path(latest).filename().string());
    EXPECT_EQ(back.ints.at("step"), step);
    CheckpointData want = d;
    want.ints["step"] = step;
    expect_same(want, back);
  }
  return newest;
}

const char* g_kill_stage = nullptr;
void kill_at_stage(const char* stage) {
  if (std::strcmp(stage, g_kill_stage) == 0) ::raise(SIGKILL);
}

TEST_F(CheckpointFile, KillAtEverySaveStageKeepsThePublishedCheckpoint) {
  CheckpointData d = make_data(20000, 8);
  const char* stages[] = {"data:written",    "data:synced",      "data:renamed",   "manifest:written",
                          "manifest:synced", "manifest:renamed", "latest:written", "latest:synced",
                          "latest:renamed",  "retention:deleted"};
  int64_t step = 1;
  for (int64_t s = 1; s <= 2; ++s, ++step) {
    d.ints["step"] = s;
    save_checkpoint(dir_, s, d, 2);
  }
  for (const char* stage : stages) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      g_kill_stage = stage;
      set_checkpoint_fault_hook(kill_at_stage);
      CheckpointData c = d;
      c.ints["step"] = step;
      try {
        save_checkpoint(dir_, step, c, 2);
      } catch (...) {
        ::_exit(2);
      }
      ::_exit(0);  // the stage was never reached
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << stage << " was not reached";
    check_kill_invariants(dir_, d, stage);
    // Published once its manifest is renamed into place; before that the previous checkpoint is the latest.
    const bool published = std::strncmp(stage, "data:", 5) != 0 && std::strcmp(stage, "manifest:written") != 0 &&
                           std::strcmp(stage, "manifest:synced") != 0;
    EXPECT_EQ(latest_checkpoint(dir_), dir_ + "/" + checkpoint_file_name(published ? step : step - 1)) << stage;
    if (published) ++step;
    // Each following kill starts from a clean, fully published state.
    d.ints["step"] = step;
    save_checkpoint(dir_, step++, d, 2);
  }
  // Kills at "*:written" / "*:synced" leave their temp file (6 of them); they are ignored, and removed by a later save
  // once older than 10 s.
  EXPECT_EQ(count_temp_files(dir_), 6);
}

// A child saves ~20 MB checkpoints in a loop and is killed -9 at random moments.
TEST_F(CheckpointFile, SigkillDuringSavesNeverLosesThePublishedCheckpoint) {
  CheckpointData d;
  Generator gen(9);
  d.tensors["model/backbone.embedding.weight"] = Tensor::randn({5 * 1000 * 1000}, gen);  // 20 MB
  d.tensors["optim/step_count"] = Tensor::scalar(3, DType::I64);
  d.strings["config_yaml"] = "train: {steps: 10}\n";
  d.ints["step"] = 0;
  save_checkpoint(dir_, 0, d, 3);
  std::mt19937 rng(12345);
  int64_t next = 1;
  int caught_mid_save = 0;
  // Six kills at random moments; on a loaded machine where saves are slow, more rounds with longer waits until at
  // least three checkpoints got out, so that the kills test something.
  int rounds = 0;
  for (int round = 0; round < 6 || (next <= 3 && round < 20); ++round, ++rounds) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      CheckpointData c = d;
      for (int64_t s = next; s < next + 1000; ++s) {
        c.ints["step"] = s;
        try {
          save_checkpoint(dir_, s, c, 3);
        } catch (...) {
          ::_exit(2);
        }
      }
      ::_exit(0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds((20 + rng() % 600) * (round < 6 ? 1 : 4)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the saving child exited by itself with " << WEXITSTATUS(status);
    next = check_kill_invariants(dir_, d, "round " + std::to_string(round), &caught_mid_save) + 1;
  }
  std::cout << "[ info     ] " << rounds << " kills, " << next - 1 << " checkpoints saved, " << caught_mid_save
            << " kill(s) left the newest file without its manifest, " << count_temp_files(dir_)
            << " temp file(s) left\n";
  EXPECT_GT(next, 3) << "the child never got a checkpoint out: kills came too early to test anything";
}

}  // namespace
}  // namespace mt::train
