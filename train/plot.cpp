#include "train/plot.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "core/error.h"

namespace mt::train {

namespace {

using Series = std::vector<std::pair<int64_t, double>>;

// Canvas and plot area in SVG user units.
constexpr double kWidth = 800, kHeight = 500;
constexpr double kLeft = 80, kRight = 24, kTop = 48, kBottom = 56;
constexpr double kPlotW = kWidth - kLeft - kRight, kPlotH = kHeight - kTop - kBottom;

// A "nice" number close to x: 1, 2, 5 or 10 times a power of ten (Heckbert, Graphics Gems I). round: nearest,
// else the smallest nice number >= x.
double nice_num(double x, bool round) {
  const double e = std::floor(std::log10(x));
  const double p = std::pow(10.0, e);
  const double f = x / p;
  double nf;
  if (round) {
    nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
  } else {
    nf = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
  }
  return nf * p;
}

struct Axis {
  double lo = 0, hi = 1, step = 0.2;
  int decimals = 1;
};

// Round axis limits around [lo, hi] with about `target` ticks; integer_ticks keeps the spacing >= 1 (steps).
Axis make_axis(double lo, double hi, int target, bool integer_ticks) {
  if (!(hi > lo)) {  // one value (or none): open a window around it
    const double pad = lo != 0 ? std::fabs(lo) * 0.1 : 1.0;
    lo -= integer_ticks ? std::max(pad, 1.0) : pad;
    hi += integer_ticks ? std::max(pad, 1.0) : pad;
  }
  Axis a;
  const double range = nice_num(hi - lo, false);
  a.step = nice_num(range / (target - 1), true);
  if (integer_ticks && a.step < 1) a.step = 1;
  a.lo = std::floor(lo / a.step) * a.step;
  a.hi = std::ceil(hi / a.step) * a.step;
  if (!(a.hi > a.lo)) a.hi = a.lo + a.step;  // values huge next to their spread
  a.decimals = std::max(0, -static_cast<int>(std::floor(std::log10(a.step))));
  return a;
}

std::string fmt(double v, int decimals) {
  char buf[64];
  if (v != 0 && (std::fabs(v) >= 1e7 || decimals > 6)) {
    std::snprintf(buf, sizeof buf, "%.3g", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  }
  return buf;
}

std::string escape_xml(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // Control characters other than tab / newline are not allowed in XML 1.0 text.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') {
          out += ' ';
        } else {
          out += c;
        }
    }
  }
  return out;
}

Series finite_points(const Series& s) {
  Series out;
  for (const auto& p : s) {
    if (std::isfinite(p.second)) out.push_back(p);
  }
  return out;
}

void write_all(int fd, const std::string& data, const std::string& path, const std::string& tmp) {
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = w < 0 ? errno : EIO;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(ErrorKind::Io,
                  str("cannot write the loss plot '", path, "' (temporary file '", tmp, "'): ", std::strerror(err)));
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
}

}  // namespace

std::string loss_svg(const Series& train_loss, const Series& val_loss, const std::string& title) {
  const Series tr = finite_points(train_loss), va = finite_points(val_loss);
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  for (const Series* s : {&tr, &va}) {
    for (const auto& p : *s) {
      xlo = std::min(xlo, static_cast<double>(p.first));
      xhi = std::max(xhi, static_cast<double>(p.first));
      ylo = std::min(ylo, p.second);
      yhi = std::max(yhi, p.second);
    }
  }
  const bool empty = tr.empty() && va.empty();
  if (empty) xlo = 0, xhi = 1, ylo = 0, yhi = 1;
  // Losses so large that hi - lo overflows cannot be placed on a linear axis; clamp to a representable window.
  const double big = 1e300;
  ylo = std::max(ylo, -big), yhi = std::min(yhi, big);
  const Axis ax = make_axis(xlo, xhi, 8, true), ay = make_axis(ylo, yhi, 6, false);
  auto px = [&](double x) { return kLeft + (x - ax.lo) / (ax.hi - ax.lo) * kPlotW; };
  auto py = [&](double y) {
    return kTop + kPlotH - (std::min(std::max(y, ylo), yhi) - ay.lo) / (ay.hi - ay.lo) * kPlotH;
  };

  std::string o;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
                "font-family=\"sans-serif\" font-size=\"12\">\n",
                kWidth, kHeight, kWidth, kHeight);
  o += buf;
  o += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  std::snprintf(buf, sizeof buf, "<text x=\"%.1f\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">", kWidth / 2);
  o += buf + escape_xml(title) + "</text>\n";

  // Grid lines and tick labels (index-based so that rounding never adds or drops a tick).
  const int nx = std::max(1, static_cast<int>(std::lround((ax.hi - ax.lo) / ax.step)));
  const int ny = std::max(1, static_cast<int>(std::lround((ay.hi - ay.lo) / ay.step)));
  for (int i = 0; i <= nx && i <= 1000; ++i) {
    const double v = ax.lo + i * ax.step, x = px(v);
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#e0e0e0\"/>\n"
                  "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">",
                  x, kTop, x, kTop + kPlotH, x, kTop + kPlotH + 18);
    o += buf + fmt(std::fabs(v) < ax.step * 1e-9 ? 0.0 : v, 0) + "</text>\n";
  }
  for (int i = 0; i <= ny && i <= 1000; ++i) {
    const double v = ay.lo + i * ay.step, y = kTop + kPlotH - static_cast<double>(i) / ny * kPlotH;
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#e0e0e0\"/>\n"
                  "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\">",
                  kLeft, y, kLeft + kPlotW, y, kLeft - 6, y + 4);
    o += buf + fmt(std::fabs(v) < ay.step * 1e-9 ? 0.0 : v, ay.decimals) + "</text>\n";
  }
  // Axes and their labels.
  std::snprintf(buf, sizeof buf,
                "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" stroke=\"black\"/>\n", kLeft,
                kTop, kPlotW, kPlotH);
  o += buf;
  std::snprintf(buf, sizeof buf, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">step</text>\n", kLeft + kPlotW / 2,
                kHeight - 12);
  o += buf;
  std::snprintf(buf, sizeof buf,
                "<text x=\"18\" y=\"%.2f\" text-anchor=\"middle\" transform=\"rotate(-90 18 %.2f)\">loss</text>\n",
                kTop + kPlotH / 2, kTop + kPlotH / 2);
  o += buf;

  // The curves and the legend (top right, inside the plot area).
  struct Curve {
    const Series* s;
    const char* name;
    const char* color;
  };
  int legend_row = 0;
  for (const Curve& c : {Curve{&tr, "train", "#1f77b4"}, Curve{&va, "val", "#d62728"}}) {
    if (c.s->empty()) continue;
    o += "<polyline fill=\"none\" stroke=\"";
    o += c.color;
    o += "\" stroke-width=\"1.5\" points=\"";
    for (const auto& p : *c.s) {
      std::snprintf(buf, sizeof buf, "%.2f,%.2f ", px(static_cast<double>(p.first)), py(p.second));
      o += buf;
    }
    o += "\"/>\n";
    const double ly = kTop + 16 + 18 * legend_row++;
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" stroke-width=\"2\"/>\n"
                  "<text x=\"%.2f\" y=\"%.2f\">%s</text>\n",
                  kLeft + kPlotW - 80, ly, kLeft + kPlotW - 56, ly, c.color, kLeft + kPlotW - 50, ly + 4, c.name);
    o += buf;
  }
  if (empty) {
    std::snprintf(buf, sizeof buf, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">no data</text>\n",
                  kLeft + kPlotW / 2, kTop + kPlotH / 2);
    o += buf;
  }
  o += "</svg>\n";
  return o;
}

void write_loss_svg(const std::string& path, const Series& train_loss, const Series& val_loss,
                    const std::string& title) {
  const std::string svg = loss_svg(train_loss, val_loss, title);
  // A unique temporary name beside the target (same filesystem, so the rename is atomic).
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = str(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  MT_CHECK(fd >= 0, ErrorKind::Io, "cannot write the loss plot '", path, "': cannot create the temporary file '", tmp,
           "': ", std::strerror(errno));
  write_all(fd, svg, path, tmp);
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(ErrorKind::Io, str("cannot write the loss plot '", path, "': fsync failed: ", std::strerror(err)));
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error(ErrorKind::Io, str("cannot write the loss plot '", path, "': close failed: ", std::strerror(err)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error(ErrorKind::Io, str("cannot write the loss plot '", path, "': cannot rename '", tmp,
                                   "' over it: ", std::strerror(err)));
  }
}

}  // namespace mt::train
