-- Harbor's repository and tag patterns: doublestar_match() against the
-- behaviour of doublestar v1.3.4 (the version Harbor pins), Harbor's own rule
-- for an empty pattern, malformed patterns, and the limits on compiling.
-- The rules are explained in docs/harbor-and-dragonfly.md, section
-- "Repository and tag patterns".
\set SHOW_CONTEXT never
CREATE DATABASE harbor_doublestar;
\c harbor_doublestar
CREATE EXTENSION p2p_preheat;

-- 'true', 'false', or the SQLSTATE of the error
CREATE FUNCTION ds(pattern text, name text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	RETURN p2p_preheat.doublestar_match(pattern, name)::text;
EXCEPTION WHEN OTHERS THEN
	RETURN 'error ' || SQLSTATE;
END $$;

-- SQLSTATE, message, detail and hint of an error
CREATE FUNCTION ds_error(pattern text) RETURNS TABLE (code text, message text, detail text, hint text)
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM p2p_preheat.doublestar_match(pattern, 'x');
	code := 'no error';
	RETURN NEXT;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
		detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
	RETURN NEXT;
END $$;

-- The matching rules, case by case: pattern, name, and what doublestar
-- v1.3.4's Match answers ("error" = it reports a malformed pattern).  The
-- first group follows doublestar's own test table.
CREATE TABLE expect (section text, pattern text, name text, expected text);
INSERT INTO expect VALUES
	-- "*": any run of characters within one segment, never "/"
	('star', '*', '', 'true'), ('star', '*', '/', 'false'),
	('star', '/*', '/', 'true'), ('star', '/*', '/debug/', 'false'), ('star', '/*', '//', 'false'),
	('star', '*', 'abc', 'true'), ('star', '*c', 'abc', 'true'), ('star', '*/', 'a/', 'true'),
	('star', 'a*', 'a', 'true'), ('star', 'a*', 'abc', 'true'), ('star', 'a*', 'ab/c', 'false'),
	('star', 'a*/b', 'abc/b', 'true'), ('star', 'a*/b', 'a/c/b', 'false'),
	('star', 'a*b*c*d*e*', 'axbxcxdxe', 'true'),
	('star', 'a*b*c*d*e*/f', 'axbxcxdxe/f', 'true'), ('star', 'a*b*c*d*e*/f', 'axbxcxdxexxx/f', 'true'),
	('star', 'a*b*c*d*e*/f', 'axbxcxdxe/xxx/f', 'false'), ('star', 'a*b*c*d*e*/f', 'axbxcxdxexxx/fff', 'false'),
	('star', 'a*b?c*x', 'abxbbxdbxebxczzx', 'true'), ('star', 'a*b?c*x', 'abxbbxdbxebxczzy', 'false'),
	('star', '*x', 'xxx', 'true'), ('star', 'a*b', 'a/b', 'false'),
	-- "?": one character, never "/"; characters, not bytes
	('question', 'a?b', 'a☺b', 'true'), ('question', 'a???b', 'a☺b', 'false'), ('question', 'a?b', 'a/b', 'false'),
	-- plain characters: exact, whole name, nothing special about regex characters
	('literal', 'abc', 'abc', 'true'), ('literal', 'a//b/c', 'a/b/c', 'false'), ('literal', 'a/b/c', 'a/b//c', 'false'),
	('literal', 'a/', 'a', 'false'), ('literal', 'broken-symlink', 'broken-symlink', 'true'),
	('literal', 'working-symlink/c/*', 'working-symlink/c/d', 'true'),
	('literal', 'working-sym*/*', 'working-symlink/c', 'true'),
	('literal', 'v1.0', 'v1.0', 'true'), ('literal', 'v1.0', 'v1x0', 'false'), ('literal', 'a+b', 'a+b', 'true'),
	('literal', '(x)|y', '(x)|y', 'true'), ('literal', '(x)|y', 'y', 'false'), ('literal', '^$', '^$', 'true'),
	('literal', 'a}', 'a}', 'true'), ('literal', 'a,b', 'a,b', 'true'),
	-- "[...]": one character of a class; only "^" negates, "!" is an ordinary character
	('class', 'ab[c]', 'abc', 'true'), ('class', 'ab[b-d]', 'abc', 'true'), ('class', 'ab[e-g]', 'abc', 'false'),
	('class', 'ab[^c]', 'abc', 'false'), ('class', 'ab[^b-d]', 'abc', 'false'), ('class', 'ab[^e-g]', 'abc', 'true'),
	('class', 'a[^a]b', 'a☺b', 'true'), ('class', 'a[^a][^a][^a]b', 'a☺b', 'false'),
	('class', '[a-ζ]*', 'α', 'true'), ('class', '*[a-ζ]', 'A', 'false'), ('class', '[abc]', 'b', 'true'),
	('class', '[!a]pp', 'bpp', 'false'), ('class', '[!a]pp', '!pp', 'true'), ('class', '[!a]pp', 'app', 'true'),
	('class', '[\]a]', ']', 'true'), ('class', '[\-]', '-', 'true'),
	('class', '[x\-]', 'x', 'true'), ('class', '[x\-]', '-', 'true'), ('class', '[x\-]', 'z', 'false'),
	('class', '[\-x]', 'x', 'true'), ('class', '[\-x]', '-', 'true'), ('class', '[\-x]', 'a', 'false'),
	('class', '[z-a]', 'm', 'false'), ('class', '[^]', 'x', 'true'), ('class', '[^]', '/', 'false'),
	('class', '[^a]', '/', 'false'), ('class', 'a[/]b', 'a/b', 'false'),
	('class', '1.?', '1.0', 'true'), ('class', '1.?', '1.10', 'false'),
	-- "**": any number of whole segments, but only when it is a whole segment itself
	('doublestar', '**', '', 'true'), ('doublestar', '**', 'a/b/c', 'true'),
	('doublestar', 'a/**', 'a', 'false'), ('doublestar', 'a/**', 'a/b', 'true'), ('doublestar', 'a/**', 'a/b/c', 'true'),
	('doublestar', 'x/**', 'x/', 'true'), ('doublestar', 'x/**/', 'x/', 'true'),
	('doublestar', '**/c', 'c', 'true'), ('doublestar', '**/c', 'b/c', 'true'), ('doublestar', '**/c', 'a/b/c', 'true'),
	('doublestar', '**/c', 'a/b', 'false'), ('doublestar', '**/c', 'abcd', 'false'), ('doublestar', '**/c', 'a/abc', 'false'),
	('doublestar', '**/', '', 'true'), ('doublestar', '**/', 'a/', 'true'), ('doublestar', '**/', 'a', 'false'),
	('doublestar', 'a/**/b', 'a/b', 'true'), ('doublestar', 'a/**/c', 'a/b/c', 'true'), ('doublestar', 'a/**/d', 'a/b/c/d', 'true'),
	('doublestar', 'abc/**', 'abc/b', 'true'), ('doublestar', '**/abc', 'abc', 'true'),
	('doublestar', '**/*.txt', 'abc/【test】.txt', 'true'), ('doublestar', '**/【*', 'abc/【test】.txt', 'true'),
	('doublestar', 'b/**/f', 'b/symlink-dir/f', 'true'),
	('doublestar', 'tools/**', 'tools', 'false'), ('doublestar', 'tools/**', 'tools/a/b', 'true'),
	-- not a whole segment: just a star
	('doublestar', 'abc**', 'abc/b', 'false'), ('doublestar', 'a**b', 'axxb', 'true'), ('doublestar', 'a**b', 'a/b', 'false'),
	('doublestar', '**b', 'x/b', 'false'), ('doublestar', '**b', 'b', 'true'),
	('doublestar', '{**,x}/y', 'a/b/y', 'false'), ('doublestar', '{**,x}/y', 'a/y', 'true'),
	-- a whole segment inside alternatives
	('doublestar', '{a/**,b}', 'a/x/y', 'true'), ('doublestar', '{a/**,b}', 'a', 'false'), ('doublestar', '{a/**,b}', 'b', 'true'),
	-- doublestar's finer points: three stars never match an empty segment, and a
	-- star followed by more of its segment leaves that rest a character
	('doublestar', '***', '', 'false'), ('doublestar', '***', 'a', 'true'), ('doublestar', 'x/***', 'x/', 'false'),
	('doublestar', 'a*{,b}', 'a', 'false'), ('doublestar', 'a*{,b}', 'ab', 'true'), ('doublestar', 'a{,b}', 'a', 'true'),
	-- "{a,b}": alternatives, nested, possibly empty, possibly spanning segments
	('braces', 'ab{c,d}', 'abc', 'true'), ('braces', 'ab{c,d,*}', 'abcde', 'true'),
	('braces', 'a{,bc}', 'a', 'true'), ('braces', 'a{,bc}', 'abc', 'true'),
	('braces', 'a/{b/c,c/b}', 'a/b/c', 'true'), ('braces', 'a/{b/c,c/b}', 'a/c/b', 'true'),
	('braces', '{a/{b,c},abc}', 'a/b', 'true'), ('braces', '{a/{b,c},abc}', 'a/c', 'true'),
	('braces', '{a/{b,c},abc}', 'abc', 'true'), ('braces', '{a/{b,c},abc}', 'a/b/c', 'false'),
	('braces', '{a/ab*}', 'a/abc', 'true'), ('braces', '{a/*}', 'a/b', 'true'), ('braces', '{a/abc}', 'a/abc', 'true'),
	('braces', '{a/b,a/c}', 'a/c', 'true'),
	('braces', '{a,{b,c}}d', 'cd', 'true'), ('braces', '{a,{b,c}}d', 'ad', 'true'), ('braces', '{a,{b,c}}d', 'd', 'false'),
	('braces', '{a,{b,{c,d}}}x', 'dx', 'true'), ('braces', '{}', '', 'true'), ('braces', '{}a', 'a', 'true'),
	('braces', '{,a}', '', 'true'), ('braces', '{*,*}{*,*}{*,*}Q', 'xQ', 'true'), ('braces', '{,*}{,*}1', '1', 'true'),
	-- patterns as Harbor users write them
	('harbor', 'app{,-*}', 'app', 'true'), ('harbor', 'app{,-*}', 'app-x', 'true'), ('harbor', 'app{,-*}', 'appx', 'false'),
	('harbor', '{app,db}', 'db', 'true'), ('harbor', '{app,db}', 'tools', 'false'),
	('harbor', '[0-9].*', '1.0', 'true'), ('harbor', '[0-9].*', 'v1.0', 'false'), ('harbor', '1.?', '1/0', 'false'),
	('harbor', 'tools/*', 'tools/a/b', 'false'), ('harbor', '**/cli', 'xcli', 'false'), ('harbor', 'a/**/b', 'ab', 'false'),
	-- "\": the next character is literal; an escaped "/" matches nothing
	('escape', 'a\*b', 'ab', 'false'), ('escape', 'a/\**', 'a/b/c', 'false'),
	('escape', 'abc\*', 'abc*', 'true'), ('escape', 'abc\*', 'abcd', 'false'),
	('escape', '\{a,b\}', '{a,b}', 'true'), ('escape', '\{a,b\}', 'a', 'false'), ('escape', 'a\/b', 'a/b', 'false'),
	-- malformed: doublestar reports an error
	('malformed', '[]a]', ']', 'error'), ('malformed', '[-]', '-', 'error'),
	('malformed', '[x-]', 'x', 'error'), ('malformed', '[x-]', '-', 'error'), ('malformed', '[x-]', 'z', 'error'),
	('malformed', '[-x]', 'x', 'error'), ('malformed', '[-x]', '-', 'error'), ('malformed', '[-x]', 'a', 'error'),
	('malformed', '\', 'a', 'error'), ('malformed', '[a-b-c]', 'a', 'error'), ('malformed', '[', 'a', 'error'),
	('malformed', '[^', 'a', 'error'), ('malformed', '[^bc', 'a', 'error'), ('malformed', 'a[', 'ab', 'error'),
	('malformed', 'ab{c,d}[', 'abcd', 'error'), ('malformed', '[\\]', '\', 'error'), ('malformed', '[\]', ']', 'error'),
	('malformed', 'a{[}]', 'a}', 'error'),
	-- doublestar checks a pattern only as far as a name takes it: "a[" against
	-- "a" is plain false there.  We refuse the pattern for every name, as
	-- Harbor's preheat fails as soon as one name reaches the bad part.
	('malformed', 'a[', 'a', 'false (error here)');

SELECT section, pattern, name, expected, ds(pattern, name) AS got
  FROM expect ORDER BY section, pattern, name;

-- every case agrees with doublestar, bar the one noted above
SELECT count(*) AS cases,
	   count(*) FILTER (WHERE ds(pattern, name) = replace(expected, 'error', 'error 22023')) AS agree
  FROM expect;

-- Harbor's own rule: an empty pattern is no filter at all (doublestar alone
-- would match only an empty name)
SELECT name, ds('', name) AS empty_pattern FROM (VALUES (''), ('app'), ('tools/cli')) v(name);

-- the regular expressions patterns become
SELECT pattern, p2p_preheat.doublestar_regex(pattern)
  FROM (VALUES ('library/**/app{,-*}:v?.[0-9]'), ('**/cli'), ('a/**'), ('{a/**,b}/c'), ('[!a-c]'), ('')) v(pattern);

-- malformed patterns: 22023 with the pattern, where, and how to write it
SELECT pattern, e.* FROM (VALUES ('{a,b'), ('[unclosed'), ('[]'), ('[a-]'), ('[-a]'), ('tag\')) v(pattern),
	LATERAL ds_error(pattern) e;
SELECT p2p_preheat.doublestar_match(NULL, 'x') IS NULL AS null_pattern;
SELECT p2p_preheat.doublestar_regex('{a,b');

-- limits: the pattern's length, and how much work compiling it may take
SELECT code, message, detail, hint FROM ds_error(repeat('a', 1025));
SELECT ds(repeat('a', 1024), repeat('a', 1024)) AS longest;
SELECT code, left(message, 60) AS message, detail, hint FROM ds_error(repeat('{*,*}', 200) || 'Q');
SELECT code, left(message, 60) AS message, detail FROM ds_error(repeat('{*,*}', 33) || 'Q');
SELECT ds(repeat('{*,*}', 32) || 'Q', 'xQ') AS at_the_limit;
SELECT code, left(message, 60) AS message, detail FROM ds_error(repeat('*a', 512));

-- statement_timeout stops a statement that compiles many costly patterns,
-- and leaves nothing half-done in the backend's cache
SET statement_timeout = '100ms';
SELECT count(*) FROM generate_series(1, 1000) g
 WHERE p2p_preheat.doublestar_match(repeat('{,*}', 64) || g, g::text);
RESET statement_timeout;
SELECT p2p_preheat.doublestar_match(repeat('{,*}', 64) || '1', '1') AS after_timeout;

\c contrib_regression
DROP DATABASE harbor_doublestar;
