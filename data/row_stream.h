// Row files read as a stream: training rows (data/labelled.h) and the inputs of `mamba-train evaluate` / `predict`
// go through this one reader, which holds one record at a time (constant memory for files of any size). The file is
// read in chunks, gzip-compressed or not (data/gz_reader.h).
//
// Formats (line numbers are 1-based and name where a record starts):
//   tsv    a header line naming the columns; fields split on tabs, no quoting; CRLF accepted.
//   csv    RFC 4180: a header line, fields separated by commas, "..." quoting with "" for a quote; a quoted field may
//          span lines; characters after a closing quote are kept ("a"b reads ab).
//   jsonl  one JSON object per line; the text field must be a string; the label an integer (given as its decimal
//          text) or a string.
//   fasta  '>' starts a record (header text ignored), the sequence lines that follow are concatenated; the record's
//          line is its header line.
//   lines  every line is the text of one row; no header, no labels.
// Blank lines (only spaces / tabs, or nothing) are not rows in tsv / jsonl / lines; a csv record that is one empty
// field is not a row; in fasta they are skipped.
//
// A record that cannot be a row (a wrong field count, a line that is not a JSON object, a missing field, sequence
// before the first FASTA header, an empty FASTA record) is still passed on, with `problem` saying why, so that the
// caller applies its bad-row policy in file order. Problems with the file as a whole are mt::Error(Data): a missing
// or unreadable file ("<path>: cannot open: <reason>"), an empty tsv / csv file (no header), a header without the
// text or label column ("<path>:1: no column 'x' (data.text_column); the header has 'a', 'b'"), a csv quote still
// open at the end of the file ("<path>:<line>: a quoted field is not closed before the end of the file").
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace mt::data {

struct RowSpec {
  std::string format = "tsv";  // tsv | csv | jsonl | fasta | lines
  std::string text_column = "sentence", label_column = "label";
  // The label column / field is read (and a header without it, or a jsonl row without it, is an error); false: it
  // is never looked at (inputs to predict).
  bool labels = true;
};

struct Row {
  int64_t line = 0;     // where the record starts
  std::string text;     // the text column / field, or the FASTA sequence
  std::string label;    // the label's text (labels: true only)
  std::string problem;  // non-empty: not a usable row, and why ("3 fields, the header has 2"); text / label unset
};

// Calls on_row for every record of `path` in file order. Exceptions from on_row propagate.
void stream_rows(const std::string& path, const RowSpec& spec, const std::function<void(Row&)>& on_row);

// Text from a data file, made safe for a one-line message: printable ASCII kept, everything else as \xNN, cut after
// 60 characters.
std::string printable(const std::string& text);

}  // namespace mt::data
