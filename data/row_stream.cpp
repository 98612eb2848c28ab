#include "data/row_stream.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/gz_reader.h"

namespace mt::data {

namespace {

void strip_cr(std::string& s) {
  if (!s.empty() && s.back() == '\r') s.pop_back();
}

bool blank(const std::string& line) { return line.find_first_not_of(" \t") == std::string::npos; }

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> f;
  size_t s = 0;
  for (;;) {
    const size_t t = line.find('\t', s);
    f.push_back(line.substr(s, t == std::string::npos ? std::string::npos : t - s));
    if (t == std::string::npos) return f;
    s = t + 1;
  }
}

// Indices of the text and label columns in a header (the label's is npos when labels are not read).
struct Columns {
  size_t text = 0, label = std::string::npos;
};

Columns find_columns(const std::vector<std::string>& header, const RowSpec& spec, const std::string& path) {
  auto find = [&](const std::string& name, const char* key) {
    auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) {
      std::string have;
      for (const auto& h : header) have += (have.empty() ? "'" : ", '") + printable(h) + "'";
      if (header.size() == 1 && spec.format == "csv" && header[0].find('\t') != std::string::npos)
        have += " (a TSV file? data.format: tsv)";
      throw Error(ErrorKind::Data, str(path, ":1: no column '", name, "' (", key, "); the header has ", have));
    }
    return static_cast<size_t>(it - header.begin());
  };
  Columns c;
  c.text = find(spec.text_column, "data.text_column");
  if (spec.labels) c.label = find(spec.label_column, "data.label_column");
  return c;
}

// Parses chunks of one file into records and hands them on; finish() after the last chunk.
class Parser {
 public:
  Parser(const std::string& path, const RowSpec& spec, const std::function<void(Row&)>& on_row)
      : path_(path), spec_(spec), on_row_(on_row) {
    MT_CHECK(spec.format == "tsv" || spec.format == "csv" || spec.format == "jsonl" || spec.format == "fasta" ||
                 spec.format == "lines",
             ErrorKind::Config, "data.format: unknown format '", spec.format, "'");
  }

  void feed(const char* p, size_t n) {
    if (spec_.format == "csv") {
      for (size_t i = 0; i < n; ++i) csv_char(p[i]);
      return;
    }
    for (size_t i = 0; i < n;) {
      const char* nl = static_cast<const char*>(std::memchr(p + i, '\n', n - i));
      const size_t end = nl ? static_cast<size_t>(nl - p) : n;
      line_.append(p + i, end - i);
      i = end;
      if (nl) {
        ++i;
        end_line();
      }
    }
  }

  void finish() {
    if (spec_.format == "csv") {
      if (quote_pending_) {  // the file ends right after a closing quote
        quote_pending_ = false;
        quoted_ = false;
      }
      MT_CHECK(!quoted_, ErrorKind::Data, path_, ":", record_line_,
               ": a quoted field is not closed before the end of the file");
      if (in_record_) end_csv_record();
    } else if (!line_.empty()) {
      end_line();
    }
    if (spec_.format == "fasta") flush_fasta();
    if ((spec_.format == "tsv" || spec_.format == "csv") && !have_header_)
      throw Error(ErrorKind::Data,
                  str(path_, ": empty file (expected a header", spec_.format == "tsv" ? " line)" : ")"));
  }

 private:
  void emit(Row& r) { on_row_(r); }

  void bad(int64_t line, const std::string& problem) {
    Row r;
    r.line = line;
    r.problem = problem;
    emit(r);
  }

  void end_line() {
    ++line_no_;
    std::string line;
    line.swap(line_);
    strip_cr(line);
    if (spec_.format == "tsv") return tsv_line(line);
    if (spec_.format == "jsonl") return jsonl_line(line);
    if (spec_.format == "fasta") return fasta_line(line);
    if (line.empty() || blank(line)) return;  // lines
    Row r;
    r.line = line_no_;
    r.text = std::move(line);
    emit(r);
  }

  void tsv_line(const std::string& line) {
    if (!have_header_) {
      header_ = split_tabs(line);
      cols_ = find_columns(header_, spec_, path_);
      have_header_ = true;
      return;
    }
    if (line.empty()) return;
    std::vector<std::string> f = split_tabs(line);
    from_fields(line_no_, f);
  }

  void from_fields(int64_t line, std::vector<std::string>& f) {
    if (f.size() != header_.size()) return bad(line, str(f.size(), " fields, the header has ", header_.size()));
    Row r;
    r.line = line;
    r.text = std::move(f[cols_.text]);
    if (spec_.labels) r.label = std::move(f[cols_.label]);
    emit(r);
  }

  void jsonl_line(const std::string& line) {
    if (blank(line)) return;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return bad(line_no_, "not a JSON object");
    const std::string& tc = spec_.text_column;
    const std::string& lc = spec_.label_column;
    if (!j.contains(tc) || !j[tc].is_string())
      return bad(line_no_, str("no string field '", tc, "' (data.text_column)"));
    Row r;
    r.line = line_no_;
    if (spec_.labels) {
      if (!j.contains(lc)) return bad(line_no_, str("no field '", lc, "' (data.label_column)"));
      const nlohmann::json& lv = j[lc];
      if (lv.is_number_integer())
        r.label = lv.dump();
      else if (lv.is_string())
        r.label = lv.get<std::string>();
      else
        return bad(line_no_, str("label ", lv.dump(), " is not an integer class index"));
    }
    r.text = j[tc].get<std::string>();
    emit(r);
  }

  void fasta_line(const std::string& line) {
    if (!line.empty() && line[0] == '>') {
      flush_fasta();
      record_line_ = line_no_;
      return;
    }
    if (blank(line)) return;
    if (record_line_ == 0) return bad(line_no_, "sequence before the first '>' header line");
    seq_ += line;
  }

  void flush_fasta() {
    if (record_line_ == 0) return;
    if (seq_.empty()) {
      bad(record_line_, "empty FASTA record");
    } else {
      Row r;
      r.line = record_line_;
      r.text.swap(seq_);
      emit(r);
    }
    seq_.clear();
  }

  // ---- csv: a character state machine (a record may span chunks and lines) ----
  void csv_char(char c) {
    if (!in_record_) {
      in_record_ = true;
      record_line_ = line_no_ + 1;
    }
    if (quote_pending_) {  // a quote inside a quoted field: "" is a literal quote, anything else closed the field
      quote_pending_ = false;
      if (c == '"') {
        cur_ += '"';
        return;
      }
      quoted_ = false;
    } else if (quoted_) {
      if (c == '"') {
        quote_pending_ = true;
      } else {
        if (c == '\n') ++line_no_;
        cur_ += c;
      }
      return;
    }
    if (c == '"' && field_start_) {
      quoted_ = true;
      field_start_ = false;
    } else if (c == ',') {
      fields_.push_back(std::move(cur_));
      cur_.clear();
      field_start_ = true;
    } else if (c == '\n') {
      ++line_no_;
      end_csv_record();
    } else {
      cur_ += c;
      field_start_ = false;
    }
  }

  void end_csv_record() {
    strip_cr(cur_);
    fields_.push_back(std::move(cur_));
    cur_.clear();
    field_start_ = true;
    in_record_ = false;
    std::vector<std::string> f;
    f.swap(fields_);
    if (!have_header_) {
      header_ = std::move(f);
      cols_ = find_columns(header_, spec_, path_);
      have_header_ = true;
      return;
    }
    if (f.size() == 1 && f[0].empty()) return;  // blank line
    from_fields(record_line_, f);
  }

  const std::string& path_;
  const RowSpec& spec_;
  const std::function<void(Row&)>& on_row_;
  int64_t line_no_ = 0;  // lines completed so far
  std::string line_;     // the line being read (tsv, jsonl, fasta, lines)
  bool have_header_ = false;
  std::vector<std::string> header_;
  Columns cols_;
  int64_t record_line_ = 0;  // fasta: header line of the open record (0: none); csv: first line of the record
  std::string seq_;          // fasta: the open record's sequence
  // csv state
  std::string cur_;
  std::vector<std::string> fields_;
  bool in_record_ = false, quoted_ = false, quote_pending_ = false, field_start_ = true;
};

}  // namespace

void stream_rows(const std::string& path, const RowSpec& spec, const std::function<void(Row&)>& on_row) {
  {
    std::ifstream probe(path, std::ios::binary);
    MT_CHECK(probe.good(), ErrorKind::Data, path, ": cannot open: ", std::strerror(errno));
  }
  Parser p(path, spec, on_row);
  read_chunks(path, path, [&](const char* chunk, size_t n) { p.feed(chunk, n); });
  p.finish();
}

std::string printable(const std::string& t) {
  std::string out;
  for (size_t i = 0; i < t.size() && i < 60; ++i) {
    const unsigned char c = static_cast<unsigned char>(t[i]);
    if (c >= 32 && c < 127) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (t.size() > 60) out += "...";
  return out;
}

}  // namespace mt::data
