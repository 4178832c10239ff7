/*
 * p2p_preheat.c
 *		Module entry point: settings shared by every part of the extension.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "extra_attrs.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomBoolVariable("p2p_preheat.allow_unknown_attrs",
							 "Lets extra_attrs keys through that this version does not know.",
							 "For Dragonfly releases newer than p2p_preheat; "
							 "unknown keys are otherwise refused because Dragonfly ignores them silently.",
							 &ea_allow_unknown_attrs,
							 false,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("p2p_preheat.max_extra_attrs_size",
							"Largest extra_attrs document accepted.",
							NULL,
							&ea_max_size_kb,
							64, 1, 1024 * 1024,
							PGC_SUSET, GUC_UNIT_KB,
							NULL, NULL, NULL);
	MarkGUCPrefixReserved("p2p_preheat");
}
