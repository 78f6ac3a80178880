"""A small YAML reader for Beamfleet's fleet, job and key files.

The C side reads these files with libyaml into a tree of scalars (text plus
"was it quoted"), lists and mappings, refuses anchors, aliases, tags and
multi-document streams, and only then types each value by the field it fills
(common/bf_yaml.c, common/bf_config.c). This module builds the same tree from
the subset of YAML those files use: block mappings and lists, flow mappings
and lists (also over several lines), plain, single- and double-quoted
scalars, comments. Anything else (block scalars ``|`` ``>``, multi-line plain
scalars, complex keys) is read with PyYAML when it is installed, and is
otherwise refused with the file, line and column.

Positions are 1-based, as in the C messages ("job.yaml:3:12: ...").
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

from .errors import ConfigError, missing


class Scalar:
    """A scalar as written: its text and whether it was quoted."""
    kind = "scalar"

    def __init__(self, value: str, quoted: bool, line: int, column: int):
        self.value, self.quoted, self.line, self.column = value, quoted, line, column

    def __repr__(self) -> str:
        return f"Scalar({self.value!r}{', quoted' if self.quoted else ''})"


class Seq:
    """A list of nodes."""
    kind = "seq"

    def __init__(self, line: int, column: int):
        self.items: List[Node] = []
        self.line, self.column = line, column


class Map:
    """A mapping in file order; duplicate keys are kept (the reader reports them)."""
    kind = "map"

    def __init__(self, line: int, column: int):
        self.keys: List[str] = []
        self.key_pos: List[Tuple[int, int]] = []
        self.items: List[Node] = []
        self.line, self.column = line, column

    def get(self, key: str) -> Optional["Node"]:
        for k, v in zip(self.keys, self.items):
            if k == key:
                return v
        return None


Node = Union[Scalar, Seq, Map]


class _Unsupported(Exception):
    def __init__(self, what: str, line: int, column: int):
        super().__init__(what)
        self.what, self.line, self.column = what, line, column


class _Fail(Exception):
    """A construct the C reader refuses too: reported, never handed to PyYAML."""

    def __init__(self, what: str, line: int, column: int):
        super().__init__(what)
        self.what, self.line, self.column = what, line, column


_ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v",
            "f": "\f", "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\",
            "N": "\x85", "_": "\xa0", "L": "\u2028", "P": "\u2029"}


class _Parser:
    def __init__(self, text: str):
        self.raw = text.split("\n")
        # (indent, content without comment, line number) of every line with content
        self.lines: List[Tuple[int, str, int]] = []
        self.documents = 0
        for no, line in enumerate(self.raw, 1):
            line = line.rstrip("\r")
            body = _strip_comment(line)
            if not body.strip():
                continue
            indent = len(body) - len(body.lstrip(" "))
            if body[indent] == "\t":
                raise _Unsupported("a tab in indentation", no, indent + 1)
            if indent == 0 and (body.rstrip() == "---" or body.startswith("--- ")):
                self.documents += 1
                if self.documents > 1:
                    raise _Fail("only one YAML document per file is supported", no, 1)
                rest = body[3:].strip()
                if rest:
                    raise _Unsupported("content after '---'", no, 5)
                continue
            if indent == 0 and body.startswith("..."):
                continue
            if indent == 0 and body.startswith("%"):
                raise _Unsupported("a YAML directive", no, 1)
            self.lines.append((indent, body.rstrip(), no))
        self.i = 0

    # ---- block context ----------------------------------------------------
    def parse(self) -> Optional[Node]:
        if not self.lines:
            return None
        node = self.block(self.lines[0][0])
        if self.i < len(self.lines):
            ind, body, no = self.lines[self.i]
            raise _Unsupported("unexpected indentation or content", no, ind + 1)
        return node

    def block(self, indent: int) -> Node:
        ind, body, no = self.lines[self.i]
        content = body[ind:]
        if content == "-" or content.startswith("- "):
            return self.block_seq(ind)
        if self.key_end(content, no, ind) is not None:
            return self.block_map(ind)
        # a lone scalar or flow collection
        self.i += 1
        return self.value(body, ind, no)

    def block_seq(self, indent: int) -> Seq:
        _, _, no = self.lines[self.i]
        seq = Seq(no, indent + 1)
        while self.i < len(self.lines):
            ind, body, no = self.lines[self.i]
            content = body[ind:]
            if ind != indent or not (content == "-" or content.startswith("- ")):
                if ind > indent:
                    raise _Unsupported("unexpected indentation", no, ind + 1)
                break
            rest = content[1:].lstrip(" ")
            if not rest:
                self.i += 1
                if self.i < len(self.lines) and self.lines[self.i][0] > indent:
                    seq.items.append(self.block(self.lines[self.i][0]))
                else:
                    seq.items.append(Scalar("", False, no, ind + 2))
                continue
            col = len(body) - len(rest)  # 0-based column of the item
            if rest.startswith("- ") or rest == "-" or self.key_end(rest, no, col) is not None:
                # "- key: v" / "- - x": a nested block that starts on this line
                self.lines[self.i] = (col, body[:col].replace("-", " ") + rest, no)
                seq.items.append(self.block(col))
                continue
            self.i += 1
            seq.items.append(self.value(body, col, no))
        return seq

    def block_map(self, indent: int) -> Map:
        _, _, no = self.lines[self.i]
        m = Map(no, indent + 1)
        while self.i < len(self.lines):
            ind, body, no = self.lines[self.i]
            if ind != indent:
                if ind > indent:
                    raise _Unsupported("unexpected indentation", no, ind + 1)
                break
            content = body[ind:]
            if content == "-" or content.startswith("- "):
                break
            end = self.key_end(content, no, ind)
            if end is None:
                raise _Unsupported("a line that is neither 'key: value' nor a list item", no,
                                   ind + 1)
            key_node = self.scalar_text(content[:end].rstrip(), no, ind, block_key=True)
            m.keys.append(key_node.value)
            m.key_pos.append((no, ind + 1))
            after = end + 1
            rest = content[after:].lstrip(" ")
            self.i += 1
            if rest:
                m.items.append(self.value(body, len(body) - len(rest), no))
                continue
            nxt = self.lines[self.i] if self.i < len(self.lines) else None
            if nxt and (nxt[0] > indent or (nxt[0] == indent and (
                    nxt[1][nxt[0]:] == "-" or nxt[1][nxt[0]:].startswith("- ")))):
                m.items.append(self.block(nxt[0]))
            else:
                m.items.append(Scalar("", False, no, ind + after + 1))
        return m

    def key_end(self, content: str, no: int, col: int) -> Optional[int]:
        """Index of the ':' that ends a block mapping key in content, or None."""
        if not content:
            return None
        c = content[0]
        if c in "[{":
            return None
        if c == "?":
            raise _Unsupported("complex mapping keys", no, col + 1)
        if c in "\"'":
            close = _quote_end(content, 0)
            if close is None:
                return None
            j = close + 1
            while j < len(content) and content[j] == " ":
                j += 1
            return j if j < len(content) and content[j] == ":" and (
                j + 1 == len(content) or content[j + 1] == " ") else None
        j = content.find(":")
        while j >= 0:
            if j + 1 == len(content) or content[j + 1] == " ":
                return j
            j = content.find(":", j + 1)
        return None

    def value(self, body: str, col: int, no: int) -> Node:
        """The value that starts at body[col] on line no (a scalar or a flow collection)."""
        text = body[col:]
        c = text[0]
        self.refuse_props(text, no, col)
        if c in "[{":
            # A flow collection may go on over the following lines.
            joined = body
            depth = _flow_depth(body, col)
            first = no
            while depth > 0:
                if self.i >= len(self.lines):
                    raise _Unsupported("an unclosed flow collection", first, col + 1)
                _, nb, nno = self.lines[self.i]
                joined += "\n" * (nno - no) + nb  # blank and comment lines stay lines
                no = nno
                self.i += 1
                depth = _flow_depth(joined, col)
            fp = _Flow(joined, col, first, self)
            node = fp.node()
            fp.skip_space()
            if fp.pos < len(joined):
                line, column = fp.where(fp.pos)
                raise _Unsupported("content after a flow collection", line, column)
            return node
        if c in "|>":
            raise _Unsupported("block scalars ('|', '>')", no, col + 1)
        # A plain scalar may not go on over the next lines here.
        if self.i < len(self.lines) and self.lines[self.i][0] > self.current_indent(body) and \
                c not in "\"'":
            nxt = self.lines[self.i]
            if not (nxt[1][nxt[0]:].startswith("- ") or self.key_end(nxt[1][nxt[0]:], nxt[2],
                                                                      nxt[0]) is not None):
                raise _Unsupported("a plain scalar over several lines", nxt[2], nxt[0] + 1)
        return self.scalar_text(text.rstrip(), no, col)

    @staticmethod
    def current_indent(body: str) -> int:
        return len(body) - len(body.lstrip(" "))

    @staticmethod
    def refuse_props(text: str, no: int, col: int) -> None:
        c = text[0]
        word = text.split(" ", 1)[0]
        if c == "&":
            raise _Fail(f"anchors are not supported (anchor '{word}')", no, col + 1)
        if c == "*":
            raise _Fail(f"aliases are not supported (alias '{word}')", no, col + 1)
        if c == "!":
            raise _Fail(f"tags are not supported (tag '{word}')", no, col + 1)

    def scalar_text(self, text: str, no: int, col: int, block_key: bool = False) -> Scalar:
        if not text:
            return Scalar("", False, no, col + 1)
        self.refuse_props(text, no, col)
        if text[0] in "\"'":
            close = _quote_end(text, 0)
            if close is None:
                raise _Unsupported("a quoted scalar over several lines", no, col + 1)
            if text[close + 1:].strip():
                raise _Unsupported("text after a quoted scalar", no, col + close + 2)
            return Scalar(_unquote(text[:close + 1], no, col), True, no, col + 1)
        if text[0] in "@`" or (text[0] in "-?:" and (len(text) == 1 or text[1] == " ")):
            raise _Unsupported(f"a plain scalar cannot start with '{text[0]}'", no, col + 1)
        if not block_key and ": " in text:
            raise _Unsupported("': ' inside a plain scalar", no, col + text.index(": ") + 1)
        return Scalar(text, False, no, col + 1)


class _Flow:
    """Flow collections: [a, b] and {k: v}, nested, over one or more lines."""

    def __init__(self, text: str, pos: int, first_line: int, parser: _Parser):
        self.text, self.pos, self.first, self.parser = text, pos, first_line, parser

    def where(self, pos: int) -> Tuple[int, int]:
        before = self.text.rfind("\n", 0, pos)
        return self.first + self.text.count("\n", 0, pos), pos - before

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \n\r":
            self.pos += 1

    def node(self, in_flow: bool = False) -> Node:
        self.skip_space()
        if self.pos >= len(self.text):
            raise _Unsupported("an unclosed flow collection", *self.where(self.pos))
        c = self.text[self.pos]
        line, column = self.where(self.pos)
        if c == "[":
            seq = Seq(line, column)
            self.pos += 1
            while True:
                self.skip_space()
                if self.peek() == "]":
                    self.pos += 1
                    return seq
                item = self.node(True)
                self.skip_space()
                if self.peek() == ":":
                    raise _Unsupported("a mapping inside a flow list", *self.where(self.pos))
                seq.items.append(item)
                if not self.sep("]"):
                    return seq
        if c == "{":
            m = Map(line, column)
            self.pos += 1
            while True:
                self.skip_space()
                if self.peek() == "}":
                    self.pos += 1
                    return m
                kline, kcol = self.where(self.pos)
                key = self.node(True)
                if not isinstance(key, Scalar):
                    raise _Fail("mapping keys must be plain scalars", kline, kcol)
                self.skip_space()
                if self.peek() != ":":
                    raise _Unsupported("a flow mapping entry without ': '", *self.where(self.pos))
                self.pos += 1
                self.skip_space()
                if self.peek() in (",", "}"):
                    value: Node = Scalar("", False, *self.where(self.pos))
                else:
                    value = self.node(True)
                m.keys.append(key.value)
                m.key_pos.append((kline, kcol))
                m.items.append(value)
                if not self.sep("}"):
                    return m
        self.parser.refuse_props(self.text[self.pos:], line, column - 1)
        if c in "\"'":
            close = _quote_end(self.text, self.pos)
            if close is None:
                raise _Unsupported("an unclosed quoted scalar", line, column)
            raw = self.text[self.pos:close + 1]
            self.pos = close + 1
            if "\n" in raw:
                raise _Unsupported("a quoted scalar over several lines", line, column)
            return Scalar(_unquote(raw, line, column - 1), True, line, column)
        start = self.pos
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in ",[]{}\n":
                break
            if ch == ":" and (self.pos + 1 == len(self.text) or self.text[self.pos + 1] in " ,]}\n"):
                break
            self.pos += 1
        value = self.text[start:self.pos].strip()
        if not value:
            raise _Unsupported("an empty flow entry", line, column)
        return Scalar(value, False, line, column)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def sep(self, close: str) -> bool:
        self.skip_space()
        c = self.peek()
        if c == ",":
            self.pos += 1
            return True
        if c == close:
            self.pos += 1
            return False
        raise _Unsupported(f"expected ',' or '{close}'", *self.where(self.pos))


def _quote_end(text: str, start: int) -> Optional[int]:
    """Index of the quote that closes the quoted scalar at text[start], or None."""
    q = text[start]
    j = start + 1
    while j < len(text):
        c = text[j]
        if q == '"' and c == "\\":
            j += 2
            continue
        if c == q:
            if q == "'" and j + 1 < len(text) and text[j + 1] == "'":
                j += 2
                continue
            return j
        j += 1
    return None


def _unquote(raw: str, no: int, col: int) -> str:
    body = raw[1:-1]
    if raw[0] == "'":
        return body.replace("''", "'")
    out, j = [], 0
    while j < len(body):
        c = body[j]
        if c != "\\":
            out.append(c)
            j += 1
            continue
        e = body[j + 1] if j + 1 < len(body) else ""
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            j += 2
        elif e in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[j + 2:j + 2 + n]
            try:
                out.append(chr(int(digits, 16)))
            except ValueError:
                raise _Fail("found unknown escape character while parsing a quoted scalar",
                            no, col + j + 2) from None
            j += 2 + n
        else:
            raise _Fail("found unknown escape character while parsing a quoted scalar",
                        no, col + j + 2)
    return "".join(out)


def _strip_comment(line: str) -> str:
    """The line without its comment ('#' at the start or after a space, outside quotes)."""
    q = None
    j = 0
    while j < len(line):
        c = line[j]
        if q:
            if q == '"' and c == "\\":
                j += 2
                continue
            if c == q:
                q = None
        elif c in "\"'" and (j == 0 or line[j - 1] in " \t[{,:-"):
            q = c
        elif c == "#" and (j == 0 or line[j - 1] in " \t"):
            return line[:j]
        j += 1
    return line


def _flow_depth(text: str, start: int) -> int:
    depth, q, j = 0, None, start
    while j < len(text):
        c = text[j]
        if q:
            if q == '"' and c == "\\":
                j += 2
                continue
            if c == q:
                q = None
        elif c in "\"'":
            q = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        j += 1
    return depth


def _from_pyyaml(text: str, name: str) -> Optional[Node]:
    import yaml  # optional: only for YAML outside the subset above

    try:
        docs = list(yaml.compose_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{mark.line + 1}:{mark.column + 1}" if mark else "1:1"
        raise ConfigError(f"{name}:{where}: {getattr(e, 'problem', None) or e}") from None
    if len(docs) > 1:
        m = docs[1].start_mark
        raise ConfigError(f"{name}:{m.line + 1}:{m.column + 1}: only one YAML document per file "
                          "is supported")

    def conv(n) -> Node:
        line, col = n.start_mark.line + 1, n.start_mark.column + 1
        if n.tag and not n.tag.startswith("tag:yaml.org,2002:"):
            raise ConfigError(f"{name}:{line}:{col}: tags are not supported (tag '{n.tag}')")
        if isinstance(n, yaml.ScalarNode):
            return Scalar(n.value, n.style not in (None, ""), line, col)
        if isinstance(n, yaml.SequenceNode):
            s = Seq(line, col)
            s.items = [conv(x) for x in n.value]
            return s
        m = Map(line, col)
        for k, v in n.value:
            if not isinstance(k, yaml.ScalarNode):
                raise ConfigError(f"{name}:{line}:{col}: mapping keys must be plain scalars")
            m.keys.append(k.value)
            m.key_pos.append((k.start_mark.line + 1, k.start_mark.column + 1))
            m.items.append(conv(v))
        return m

    return conv(docs[0]) if docs and docs[0] is not None else None


def parse(text: str, name: str = "<yaml>") -> Node:
    """The tree of one YAML document; an empty one is an empty mapping.
    ConfigError "name:line:column: what" on anything it cannot read."""
    if "\0" in text:
        raise ConfigError(f"{name}: NUL character in the file")
    try:
        root = _Parser(text).parse()
    except _Fail as e:
        raise ConfigError(f"{name}:{e.line}:{e.column}: {e.what}") from None
    except _Unsupported as e:
        try:
            import yaml  # noqa: F401
        except ImportError:
            raise missing("PyYAML", "pyyaml",
                          f"{name}:{e.line}:{e.column}: {e.what}: reading this YAML") from None
        root = _from_pyyaml(text, name)
    if root is None or (isinstance(root, Scalar) and not root.quoted
                        and root.value in ("", "~", "null")):
        return Map(root.line if root else 1, root.column if root else 1)
    return root


def load(path: str, limit: int = 1 << 20) -> Node:
    """parse() of the file at path (at most 1 MiB, as bf_yaml_load)."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    if len(data) > limit:
        raise ConfigError(f"{path}: larger than {limit} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 (byte {e.start})") from None
    return parse(text, path)


def to_python(node: Node):
    """The tree as plain Python values (every scalar a str): for display and tests."""
    if isinstance(node, Scalar):
        return node.value
    if isinstance(node, Seq):
        return [to_python(x) for x in node.items]
    return {k: to_python(v) for k, v in zip(node.keys, node.items)}
